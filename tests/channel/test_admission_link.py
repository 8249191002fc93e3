"""The admission link over a real loopback socket: a router's admits matched to their
decisions, releases, cancellation, a lost controller, and reconnecting after a restart."""

from __future__ import annotations

import asyncio
import pickle
from types import SimpleNamespace

import pytest

from serve_app.admission import AdmissionController
from serve_app.channel.admission_link import AdmissionLink, ControllerLink
from serve_app.channel.admission_server import AdmissionServer
from serve_app.channel.frames import DECISION, HELLO, encode
from serve_app.channel.outbox import ChannelBroken
from serve_app.config import AdmissionConfig
from serve_app.outcomes import Decision, Outcome, Ticket
from serve_app.protocol import EngineStats, ReplyAddress


def ticket(name: str) -> Ticket:
    return Ticket("m", "t", name, 10, 10)


class Desk:
    """A controller stand-in: each ticket's request_id says how long deciding takes."""

    def __init__(self) -> None:
        self.released: list = []
        self.cancelled: list[str] = []

    async def admit(self, ticket: Ticket) -> Decision:
        try:
            await asyncio.sleep(float(ticket.request_id.split(":")[1]) if ":" in ticket.request_id else 0)
        except asyncio.CancelledError:
            self.cancelled.append(ticket.request_id)
            raise
        if ticket.request_id == "fails":
            raise ValueError("a bug")
        return Decision(Outcome.ADMITTED, lease_id="lease-" + ticket.request_id)

    def release_each(self, releases) -> int:
        self.released.extend(releases)
        return len(releases)


@pytest.fixture
async def desk():
    desk = Desk()
    desk.server = AdmissionServer(desk)
    desk.address = await desk.server.start("127.0.0.1")
    yield desk
    desk.server.stop()


async def connect(address: ReplyAddress) -> AdmissionLink:
    _, link = await asyncio.get_running_loop().create_connection(AdmissionLink, address.host, address.port)
    link.send(HELLO, b"", address.token.encode())
    return link


async def test_each_admit_gets_its_own_decision_whatever_order_they_are_decided_in(desk):
    link = await connect(desk.address)
    names = ["slow:0.2", "quick", "middle:0.1"]
    decisions = await asyncio.gather(*(link.admit(ticket(name)) for name in names))
    assert [decision.lease_id for decision in decisions] == ["lease-" + name for name in names]


async def test_releases_reach_the_controller_in_one_batch(desk):
    link = await connect(desk.address)
    link.release_many([("a", None, None), "b"])
    await link.admit(ticket("after"))  # frames arrive in order: the batch came first
    assert desk.released == [("a", None, None), "b"]


async def test_a_failure_in_the_controller_reaches_the_caller_as_an_error(desk):
    link = await connect(desk.address)
    with pytest.raises(RuntimeError, match="a bug"):
        await link.admit(ticket("fails"))
    assert (await link.admit(ticket("next"))).admitted  # the link stays usable


async def test_a_caller_that_gives_up_cancels_its_call_in_the_controller(desk):
    link = await connect(desk.address)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(link.admit(ticket("waits:5")), 0.1)
    await link.admit(ticket("after"))
    assert desk.cancelled == ["waits:5"]


async def test_a_decision_nobody_waits_for_any_more_is_released(desk):
    link = await connect(desk.address)
    stray = Decision(Outcome.ADMITTED, lease_id="stray")  # its caller gave up as it was granted
    link.data_received(encode(DECISION, b"999", pickle.dumps(stray)))
    await link.admit(ticket("after"))
    assert desk.released == ["stray"]


async def test_a_caller_that_gives_up_as_its_lease_arrives_hands_the_lease_back(desk):
    link = await connect(desk.address)
    call = asyncio.ensure_future(link.admit(ticket("x")))
    receive = link.data_received

    def receive_then_give_up(data: bytes) -> None:
        receive(data)  # the decision is in; its caller has not run yet
        call.cancel()

    link.data_received = receive_then_give_up
    with pytest.raises(asyncio.CancelledError):
        await call
    link.data_received = receive
    await link.admit(ticket("after"))
    assert desk.released == ["lease-x"]


async def test_a_lost_connection_fails_pending_calls_at_once_and_cancels_them_in_the_controller(desk):
    link = await connect(desk.address)
    call = asyncio.ensure_future(link.admit(ticket("waits:5")))
    await asyncio.sleep(0.05)
    link._transport.abort()
    with pytest.raises(ChannelBroken):
        await asyncio.wait_for(call, 1.0)
    await asyncio.sleep(0.05)
    assert desk.cancelled == ["waits:5"]
    with pytest.raises(ChannelBroken):
        await link.admit(ticket("later"))


async def test_a_connection_without_the_controller_token_is_dropped(desk):
    link = await connect(ReplyAddress(desk.address.host, desk.address.port, "not-the-token"))
    with pytest.raises(ChannelBroken):
        await asyncio.wait_for(link.admit(ticket("sneaky")), 1.0)
    assert desk.released == [] and desk.cancelled == []


async def test_the_router_reconnects_to_a_restarted_controller_at_its_new_address():
    servers = [AdmissionServer(Desk()), AdmissionServer(Desk())]
    addresses = [await server.start("127.0.0.1") for server in servers]

    async def current_address() -> ReplyAddress:
        return addresses[0]

    controller = SimpleNamespace(link_address=SimpleNamespace(remote=current_address))
    links = ControllerLink(controller, timeout_s=1.0)
    old = await links.open_soon()
    assert links.current is old and links.open_soon() is links.open_soon()
    assert (await old.admit(ticket("a"))).admitted
    old._transport.abort()  # the controller died
    await asyncio.sleep(0.01)
    assert links.current is None
    addresses.pop(0)  # Serve started a new replica, listening elsewhere
    new = await links.open_soon()
    assert new is not old and (await new.admit(ticket("b"))).lease_id == "lease-b"
    for server in servers:
        server.stop()


async def test_the_controller_serves_its_own_link():
    controller = AdmissionController(AdmissionConfig(classes={"default": {"ttft_slo_s": 1.0}}))
    await controller.report("m", "replica", EngineStats(kv_capacity_tokens=1000, max_num_seqs=4,
                                                        max_model_len=1000))
    address = await controller.link_address()
    assert await controller.link_address() == address
    link = await connect(address)
    decision = await link.admit(ticket("real"))
    assert decision.admitted and (await controller.snapshot())["in_flight"] == 1
    link.release_many([(decision.lease_id, None, None)])
    await link.admit(Ticket("m", "t", "second", 10, 10))
    assert (await controller.snapshot())["in_flight"] == 1  # the first was released, the second holds
