"""The AdmissionController, specified: a global in-flight cap, a FIFO queue, leases with a TTL."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from serve_app.admission import (
    OUTCOME_STATUS,
    AdmissionController,
    Decision,
    DrainRate,
    Outcome,
    Ticket,
    retry_after,
)
from serve_app.config import AdmissionConfig


def ticket(n: int = 0) -> Ticket:
    return Ticket(model="m", tenant="t", cost_tokens=100, request_id=f"req-{n}")


@pytest.fixture
async def make_controller():
    controllers: list[AdmissionController] = []

    def make(**settings: object) -> AdmissionController:
        values = dict(max_in_flight=2, max_queued=4, queue_timeout_s=5.0, lease_ttl_s=60.0)
        values.update(settings)
        controller = AdmissionController(AdmissionConfig(**values))
        controllers.append(controller)
        return controller

    yield make
    for controller in controllers:  # stop the background lease sweeper
        sweeper = controller._sweeper
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)


async def until(condition, timeout_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.001)


async def test_admits_up_to_max_in_flight_at_once(make_controller):
    controller = make_controller(max_in_flight=3)
    decisions = [await controller.admit(ticket(n)) for n in range(3)]
    assert all(decision.admitted for decision in decisions)
    assert all(decision.outcome is Outcome.ADMITTED for decision in decisions)
    assert len({decision.lease_id for decision in decisions}) == 3
    assert controller.snapshot() == {"in_flight": 3, "queued": 0}


async def test_request_over_the_cap_waits_until_a_lease_is_released(make_controller):
    controller = make_controller(max_in_flight=1)
    first = await controller.admit(ticket(0))
    waiting = asyncio.create_task(controller.admit(ticket(1)))
    await until(lambda: controller.snapshot()["queued"] == 1)
    assert not waiting.done()

    assert controller.release(first.lease_id) is True
    second = await asyncio.wait_for(waiting, 0.5)
    assert second.admitted and second.lease_id != first.lease_id
    assert controller.snapshot() == {"in_flight": 1, "queued": 0}


async def test_waiters_are_admitted_in_fifo_order(make_controller):
    controller = make_controller(max_in_flight=1, max_queued=10)
    holder = await controller.admit(ticket(0))
    order: list[int] = []

    async def wait_then_record(n: int) -> Decision:
        decision = await controller.admit(ticket(n))
        order.append(n)
        return decision

    tasks = []
    for n in range(1, 5):
        tasks.append(asyncio.create_task(wait_then_record(n)))
        await until(lambda n=n: controller.snapshot()["queued"] == n)

    lease = holder.lease_id
    for expected in range(1, 5):
        controller.release(lease)
        decision = await asyncio.wait_for(tasks[expected - 1], 0.5)
        lease = decision.lease_id
        assert order == list(range(1, expected + 1))


async def test_full_queue_refuses_with_retry_after(make_controller):
    controller = make_controller(max_in_flight=1, max_queued=1)
    await controller.admit(ticket(0))
    queued = asyncio.create_task(controller.admit(ticket(1)))
    await until(lambda: controller.snapshot()["queued"] == 1)

    refused = await controller.admit(ticket(2))
    assert refused.outcome is Outcome.QUEUE_FULL
    assert not refused.admitted and refused.lease_id is None
    assert refused.retry_after_s is not None and refused.retry_after_s >= 1
    assert refused.message
    assert controller.snapshot() == {"in_flight": 1, "queued": 1}
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)


async def test_zero_queue_refuses_as_soon_as_capacity_is_used(make_controller):
    controller = make_controller(max_in_flight=1, max_queued=0)
    await controller.admit(ticket(0))
    assert (await controller.admit(ticket(1))).outcome is Outcome.QUEUE_FULL


async def test_waiting_past_the_queue_timeout_is_refused(make_controller):
    controller = make_controller(max_in_flight=1, queue_timeout_s=0.05)
    await controller.admit(ticket(0))
    started = time.monotonic()
    decision = await controller.admit(ticket(1))
    assert decision.outcome is Outcome.QUEUE_TIMEOUT
    assert decision.lease_id is None
    assert decision.retry_after_s is not None and decision.retry_after_s >= 1
    assert 0.04 <= time.monotonic() - started < 0.5
    assert controller.snapshot() == {"in_flight": 1, "queued": 0}


async def test_releasing_an_unknown_lease_returns_false(make_controller):
    controller = make_controller()
    assert controller.release("no-such-lease") is False


async def test_releasing_twice_returns_false_the_second_time(make_controller):
    controller = make_controller()
    lease = (await controller.admit(ticket())).lease_id
    assert controller.release(lease) is True
    assert controller.release(lease) is False
    assert controller.snapshot()["in_flight"] == 0


async def test_expire_drops_only_leases_past_their_ttl(make_controller):
    controller = make_controller(max_in_flight=4, lease_ttl_s=10.0)
    await controller.admit(ticket(0))
    await controller.admit(ticket(1))
    now = time.monotonic()
    assert controller.expire(now) == 0
    assert controller.snapshot()["in_flight"] == 2
    assert controller.expire(now + 11.0) == 2
    assert controller.snapshot()["in_flight"] == 0


async def test_expired_lease_can_no_longer_be_released(make_controller):
    controller = make_controller(lease_ttl_s=1.0)
    lease = (await controller.admit(ticket())).lease_id
    controller.expire(time.monotonic() + 2.0)
    assert controller.release(lease) is False


async def test_expire_wakes_waiters(make_controller):
    controller = make_controller(max_in_flight=1, lease_ttl_s=1.0)
    await controller.admit(ticket(0))
    waiting = asyncio.create_task(controller.admit(ticket(1)))
    await until(lambda: controller.snapshot()["queued"] == 1)
    assert controller.expire(time.monotonic() + 2.0) == 1
    assert (await asyncio.wait_for(waiting, 0.5)).admitted
    assert controller.snapshot() == {"in_flight": 1, "queued": 0}


async def test_cancelled_waiter_leaves_the_queue(make_controller):
    controller = make_controller(max_in_flight=1)
    holder = await controller.admit(ticket(0))
    waiting = asyncio.create_task(controller.admit(ticket(1)))
    await until(lambda: controller.snapshot()["queued"] == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert controller.snapshot() == {"in_flight": 1, "queued": 0}
    controller.release(holder.lease_id)
    assert controller.snapshot() == {"in_flight": 0, "queued": 0}


async def test_waiter_cancelled_as_it_is_granted_hands_its_lease_back(make_controller):
    controller = make_controller(max_in_flight=1)
    holder = await controller.admit(ticket(0))
    waiting = asyncio.create_task(controller.admit(ticket(1)))
    await until(lambda: controller.snapshot()["queued"] == 1)
    controller.release(holder.lease_id)  # grants the waiter ...
    waiting.cancel()  # ... which gives up before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert controller.snapshot() == {"in_flight": 0, "queued": 0}


def test_every_outcome_has_an_http_status():
    assert set(OUTCOME_STATUS) == set(Outcome)
    assert OUTCOME_STATUS[Outcome.ADMITTED] == 200
    for outcome in set(Outcome) - {Outcome.ADMITTED}:
        assert OUTCOME_STATUS[outcome] == 503


@pytest.mark.parametrize(
    ("waiting", "drain", "expected"),
    [
        (0, 0.0, 5),
        (1000, 0.0, 5),
        (10, -1.0, 5),
        (0, 1000.0, 1),
        (0, 1.0, 1),
        (9, 1.0, 10),
        (4, 2.0, 3),
        (10_000, 1.0, 60),
        (10_000, 0.01, 60),
    ],
)
def test_retry_after_is_whole_seconds_between_1_and_60(waiting, drain, expected):
    assert retry_after(waiting, drain) == expected


def test_drain_rate_counts_completions_in_its_window():
    rate = DrainRate(window_s=10.0)
    assert rate.per_second(100.0) == 0.0
    for t in (100.0, 101.0, 102.0, 103.0, 104.0):
        rate.record(t)
    assert rate.per_second(104.0) == pytest.approx(0.5)
    assert rate.per_second(112.5) == pytest.approx(0.2)  # 100..102 fell out of the window
    assert rate.per_second(200.0) == 0.0


async def test_releases_feed_the_retry_after_estimate(make_controller):
    controller = make_controller(max_in_flight=1, max_queued=0)
    for n in range(30):
        controller.release((await controller.admit(ticket(n))).lease_id)
    await controller.admit(ticket(99))
    refused = await controller.admit(ticket(100))
    assert refused.outcome is Outcome.QUEUE_FULL
    assert refused.retry_after_s == 1  # 30 completions in the 30 s window: ~1/s, nobody waiting
