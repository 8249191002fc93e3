"""The router's side of admission: one call per request, batched releases, never a hang;
the same over the admission link and over Serve handle calls."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

import serve_app.admission_gate as gate_module
from serve_app.admission_gate import LOCAL_PREFIX, AdmissionGate
from serve_app.channel.admission_server import AdmissionServer
from serve_app.config import AdmissionConfig
from serve_app.outcomes import Decision, Outcome, Ticket, Usage

TICKET = Ticket("m", "t", "req", 10, 10)


class Method:
    def __init__(self, behaviour) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple] = []

    def remote(self, *args):
        self.calls.append(args)
        return self.behaviour(*args)


class FakeController:
    """Reachable both ways a router reaches the controller: handle methods and the link."""

    def __init__(self, admit) -> None:
        self.behaviour = admit
        self.asked: list[Ticket] = []
        self.released: list[list] = []
        self.admit = Method(self._admit)
        self.release_many = Method(self._released)
        self.link_address = Method(self._address)
        self.server = AdmissionServer(SimpleNamespace(admit=self._admit, release_each=self._release_each))
        self._address_now = None

    async def _admit(self, ticket: Ticket) -> Decision:
        self.asked.append(ticket)
        return await self.behaviour(ticket)

    async def _released(self, batch):
        return self._release_each(batch)

    def _release_each(self, batch) -> int:
        self.released.append(list(batch))
        return len(batch)

    async def _address(self):
        if self._address_now is None:
            self._address_now = await self.server.start("127.0.0.1")
        return self._address_now


@pytest.fixture
def fake():
    made: list[FakeController] = []

    def make(admit) -> FakeController:
        made.append(FakeController(admit))
        return made[-1]

    yield make
    for controller in made:
        controller.server.stop()


@pytest.fixture(params=[True, False], ids=["link", "handle"])
def admission(request):
    def settings(**overrides: object) -> AdmissionConfig:
        return AdmissionConfig.model_validate({"classes": {"default": {"ttft_slo_s": 0.05}},
                                               "fallback_max_in_flight": 2, "direct_link": request.param,
                                               **overrides})
    return settings


async def connected(gate: AdmissionGate) -> AdmissionGate:
    await gate.connect()
    return gate


async def grants(ticket: Ticket) -> Decision:
    return Decision(Outcome.ADMITTED, lease_id="lease-1")


async def dies(ticket: Ticket) -> Decision:
    raise ConnectionError("actor died")


async def hangs(ticket: Ticket) -> Decision:
    await asyncio.sleep(3600)


async def test_one_controller_call_per_request(fake, admission):
    controller = fake(grants)
    gate = await connected(AdmissionGate(controller, admission()))
    decision = await gate.admit(TICKET)
    assert decision.lease_id == "lease-1" and controller.asked == [TICKET]


async def test_with_admission_disabled_the_controller_is_never_asked(fake, admission):
    controller = fake(grants)
    gate = await connected(AdmissionGate(controller, admission(enabled=False)))
    decision = await gate.admit(TICKET)
    assert decision.admitted and decision.lease_id is None and controller.asked == []
    gate.release(decision.lease_id)


async def test_releases_leave_in_batches_with_their_usage(fake, admission):
    controller = fake(grants)
    gate = await connected(AdmissionGate(controller, admission()))
    await gate.admit(TICKET)  # the link is open from the first admit on
    gate.release("a", Usage(1, 2))
    gate.release("b")
    gate.release(None)
    await asyncio.sleep(gate_module.RELEASE_BATCH_S * 3)
    assert controller.released == [[("a", Usage(1, 2), None), ("b", None, None)]]


async def test_an_unreachable_controller_falls_back_to_a_local_limit(fake, admission):
    controller = fake(dies)
    gate = await connected(AdmissionGate(controller, admission()))
    first, second, third = [await gate.admit(TICKET) for _ in range(3)]
    assert first.admitted and first.lease_id.startswith(LOCAL_PREFIX) and second.admitted
    assert third.outcome is Outcome.UNAVAILABLE and third.retry_after_s
    gate.release(first.lease_id)
    assert (await gate.admit(TICKET)).admitted
    assert len(controller.asked) == 1  # decided alone afterwards, without asking again


async def test_the_controller_is_asked_again_after_the_retry_interval(fake, admission):
    now = [0.0]
    controller = fake(dies)
    gate = await connected(AdmissionGate(controller, admission(unreachable_retry_s=2.0), clock=lambda: now[0]))
    await gate.admit(TICKET)
    controller.behaviour = grants
    now[0] = 1.0
    assert (await gate.admit(TICKET)).lease_id.startswith(LOCAL_PREFIX)
    now[0] = 2.5
    assert (await gate.admit(TICKET)).lease_id == "lease-1"


async def test_a_hung_controller_costs_one_timeout_then_the_router_decides_alone(monkeypatch, fake, admission):
    monkeypatch.setattr(gate_module, "CALL_GRACE_S", 0.05)
    gate = await connected(AdmissionGate(fake(hangs), admission()))
    started = time.monotonic()
    assert (await gate.admit(TICKET)).admitted
    assert time.monotonic() - started < 1.0
    started = time.monotonic()
    assert (await gate.admit(TICKET)).admitted
    assert time.monotonic() - started < 0.01


@pytest.mark.parametrize(("policy", "admitted"), [("admit", True), ("refuse", False)])
async def test_the_unreachable_policy_is_configurable(policy, admitted, fake, admission):
    gate = await connected(AdmissionGate(fake(dies), admission(when_unreachable=policy)))
    decisions = [await gate.admit(TICKET) for _ in range(5)]
    assert all(decision.admitted is admitted for decision in decisions)
    assert all(decision.lease_id is None for decision in decisions)


async def test_deciding_alone_counts_what_the_controller_had_granted(fake, admission):
    controller = fake(grants)
    gate = AdmissionGate(controller, admission())  # local limit: 2 in flight
    held = await gate.admit(TICKET)
    controller.behaviour = dies
    assert (await gate.admit(TICKET)).admitted  # 1 granted by the controller + 1 alone
    assert (await gate.admit(TICKET)).outcome is Outcome.UNAVAILABLE
    gate.release(held.lease_id)
    assert (await gate.admit(TICKET)).admitted


async def test_until_the_link_is_open_the_gate_asks_through_the_handle_and_opens_it_meanwhile(fake, admission):
    controller = fake(grants)
    gate = AdmissionGate(controller, admission(direct_link=True))
    assert (await gate.admit(TICKET)).admitted  # through the handle; the link opens meanwhile
    await asyncio.sleep(0.05)
    assert (await gate.admit(TICKET)).admitted  # over the link
    assert len(controller.admit.calls) == 1 and len(controller.asked) == 2
    gate._link.current._transport.abort()  # the controller restarted
    await asyncio.sleep(0.01)
    assert (await gate.admit(TICKET)).admitted
    assert len(controller.admit.calls) == 2 and len(controller.link_address.calls) == 2


# ------------------------------------------------------- refusals from memory

class RecordingCounter:
    def __init__(self) -> None:
        self.decided_as: list[tuple[str, str, str]] = []

    def decided(self, model: str, tenant: str, outcome: str) -> None:
        self.decided_as.append((model, tenant, outcome))

    def flush(self) -> None:
        pass


async def overloaded_for_half_a_second(ticket: Ticket) -> Decision:
    return Decision(Outcome.OVERLOADED, retry_after_s=2.0, message="the server is overloaded",
                    alike_refused_for_s=0.5)


async def test_while_an_overload_refusal_holds_a_like_request_is_refused_without_asking(fake, admission):
    now, counter = [0.0], RecordingCounter()
    controller = fake(overloaded_for_half_a_second)
    gate = await connected(AdmissionGate(controller, admission(), clock=lambda: now[0], decisions=counter))
    await gate.admit(TICKET)
    now[0] = 0.3
    again = await gate.admit(Ticket("m", "t", "req-2", 10, 10))
    assert again.outcome is Outcome.OVERLOADED and again.message == "the server is overloaded"
    assert again.retry_after_s == pytest.approx(1.7)  # counted down from the controller's
    assert len(controller.asked) == 1
    assert counter.decided_as == [("m", "t", "overloaded")]  # the controller counts its own
    now[0] = 0.6
    await gate.admit(TICKET)
    assert len(controller.asked) == 2  # the refusal no longer holds: ask again


@pytest.mark.parametrize("unlike", [
    Ticket("m", "other-tenant", "req", 10, 10),
    Ticket("m", "t", "req", 10, 10, priority_class="batch"),
    Ticket("other-model", "t", "req", 10, 10),
    Ticket("m", "t", "req", 5, 10),  # smaller: it may fit where the refused one did not
    Ticket("m", "t", "req", 10, 5),
], ids=["tenant", "class", "model", "prompt", "max_tokens"])
async def test_a_request_unlike_the_refused_one_is_still_asked_for(unlike, fake, admission):
    controller = fake(overloaded_for_half_a_second)
    gate = await connected(AdmissionGate(controller, admission()))
    await gate.admit(TICKET)
    controller.behaviour = grants
    assert (await gate.admit(unlike)).admitted and len(controller.asked) == 2


async def test_a_request_of_fewer_sequences_than_the_refused_one_is_still_asked_for(fake, admission):
    controller = fake(overloaded_for_half_a_second)
    gate = await connected(AdmissionGate(controller, admission()))
    await gate.admit(Ticket("m", "t", "req", 10, 10, sequences=4))
    controller.behaviour = grants
    assert (await gate.admit(TICKET)).admitted and len(controller.asked) == 2


async def test_refusals_from_memory_hold_no_longer_than_configured(fake, admission):
    now = [0.0]
    controller = fake(overloaded_for_half_a_second)
    gate = await connected(AdmissionGate(controller, admission(refusal_memo_s=0.1), clock=lambda: now[0]))
    await gate.admit(TICKET)
    now[0] = 0.2
    await gate.admit(TICKET)
    assert len(controller.asked) == 2


async def test_with_no_refusal_memo_every_request_is_asked_for(fake, admission):
    controller = fake(overloaded_for_half_a_second)
    gate = await connected(AdmissionGate(controller, admission(refusal_memo_s=0)))
    for _ in range(3):
        await gate.admit(TICKET)
    assert len(controller.asked) == 3


async def test_decisions_a_router_makes_alone_are_counted_by_it(fake, admission):
    counter = RecordingCounter()
    gate = await connected(AdmissionGate(fake(dies), admission(), decisions=counter))
    for _ in range(3):
        await gate.admit(TICKET)
    assert counter.decided_as == [("m", "t", "admitted")] * 2 + [("m", "t", "admission_unavailable")]
