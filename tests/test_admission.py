"""The AdmissionController, specified: budgets from replica reports, a class- and
tenant-ordered queue that refuses early, tenant limits, fair shares, leases with a TTL."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from serve_app.admission import FORESIGHT_MARGIN, AdmissionController
from serve_app.capacity import Budget, Capacity
from serve_app.config import AdmissionConfig
from serve_app.fair_queue import Waiter
from serve_app.outcomes import Decision, Outcome, Ticket, Usage
from serve_app.pool import ModelPool
from serve_app.protocol import EngineStats

# One replica holding 1000 KV tokens and 4 sequences: a sequence slot is 250 tokens,
# so requests of 100 tokens are charged 250 and four fit at once.
REPLICA = EngineStats(kv_capacity_tokens=1000, max_num_seqs=4, max_model_len=1000)


class RecordingMetrics:
    def __init__(self) -> None:
        self.decisions: list[tuple[str, str, str]] = []
        self.queued_count = 0
        self.waits: list[float] = []

    def decided(self, model: str, tenant: str, outcome: str) -> None:
        self.decisions.append((model, tenant, outcome))

    def queued(self, model: str, tenant: str) -> None:
        self.queued_count += 1

    def waited(self, model: str, service_class: str, seconds: float) -> None:
        self.waits.append(seconds)

    def level(self, model: str, **values: float) -> None:
        pass

    def flush(self) -> None:
        pass


def ticket(n: int = 0, tenant: str = "t", prompt: int = 50, max_tokens: int = 50,
           priority_class: str | None = None, sequences: int = 1) -> Ticket:
    return Ticket("m", tenant, f"req-{n}", prompt, max_tokens, priority_class, sequences)


def settings(**overrides: object) -> AdmissionConfig:
    # No engine queue allowance unless a test asks: the budget is then exactly the slots.
    values: dict[str, object] = {"classes": {"default": {"ttft_slo_s": 1.0}}, "engine_queue_fraction": 0.0}
    values.update(overrides)
    return AdmissionConfig.model_validate(values)


@pytest.fixture
async def make_controller():
    made: list[AdmissionController] = []

    async def make(replicas: int = 1, stats: EngineStats = REPLICA, clock=time.monotonic,
                   **overrides: object) -> AdmissionController:
        controller = AdmissionController(settings(**overrides), RecordingMetrics(), clock)
        for n in range(replicas):
            await controller.report("m", f"replica-{n}", stats)
        made.append(controller)
        return controller

    yield make
    for controller in made:  # stop the background sweeper
        if controller._sweeper is not None:
            controller._sweeper.cancel()
            await asyncio.gather(controller._sweeper, return_exceptions=True)


async def until(condition, timeout_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.001)


async def fill(controller: AdmissionController, count: int = 4, tenant: str = "t") -> list[Decision]:
    decisions = [await controller.admit(ticket(n, tenant)) for n in range(count)]
    assert all(decision.admitted for decision in decisions)
    return decisions


async def queued(controller: AdmissionController) -> int:
    return (await controller.snapshot())["queued"]


async def learn_hold_time(controller: AdmissionController, seconds: float, tenant: str = "t",
                          at_once: int = 4) -> None:
    """Grant `at_once` leases (a full replica) and release them `seconds` later, so drain can
    be foreseen at that crowd."""
    leases = [(await controller.admit(ticket(990 + n, tenant))).lease_id for n in range(at_once)]
    await asyncio.sleep(seconds)
    await controller.release_many(leases)


# ----------------------------------------------------------------- the budget


async def test_the_budget_is_the_replicas_sequence_slots(make_controller):
    controller = await make_controller()
    await fill(controller, 4)
    waiting = asyncio.create_task(controller.admit(ticket(5)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    assert not waiting.done()
    waiting.cancel()


async def test_with_an_engine_queue_allowance_a_replica_takes_a_request_beyond_its_slots(make_controller):
    controller = await make_controller(engine_queue_fraction=0.25)  # 4 slots, one more may queue inside
    await fill(controller, 5)
    waiting = asyncio.create_task(controller.admit(ticket(6)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    assert not waiting.done()
    waiting.cancel()


async def test_a_large_request_is_charged_its_tokens_not_a_slot(make_controller):
    controller = await make_controller()
    big = await controller.admit(ticket(0, prompt=300, max_tokens=300))  # 600 of 1000 tokens
    assert big.admitted
    assert (await controller.admit(ticket(1))).admitted  # one 250-token slot is left
    waiting = asyncio.create_task(controller.admit(ticket(2)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    waiting.cancel()


async def test_a_request_for_several_completions_holds_a_slot_for_each(make_controller):
    controller = await make_controller()  # 4 slots of 250 tokens
    assert (await controller.admit(ticket(0, sequences=3))).admitted
    assert (await controller.admit(ticket(1))).admitted
    waiting = asyncio.create_task(controller.admit(ticket(2)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    waiting.cancel()


async def test_each_sequence_of_a_request_is_charged_its_max_tokens(make_controller):
    controller = await make_controller()
    assert (await controller.admit(ticket(0, prompt=50, max_tokens=300, sequences=2))).admitted
    assert (await controller.snapshot())["models"]["m"]["in_flight_tokens"] == 650  # 50 + 2 x 300


async def test_max_tokens_is_capped_by_the_context_when_charged(make_controller):
    controller = await make_controller(stats=EngineStats(kv_capacity_tokens=4000, max_num_seqs=4,
                                                         max_model_len=500))
    assert (await controller.admit(ticket(0, prompt=100, max_tokens=10_000))).admitted
    assert (await controller.snapshot())["models"]["m"]["in_flight_tokens"] == 1000  # a slot, not 10100


async def test_every_live_replica_adds_to_the_budget(make_controller):
    controller = await make_controller(replicas=2)
    await fill(controller, 8)
    assert (await controller.snapshot())["models"]["m"]["replicas"] == 2


async def test_a_replica_that_stops_reporting_drops_out_of_the_budget(make_controller):
    now = [100.0]
    controller = await make_controller(replicas=2, clock=lambda: now[0], report_stale_after_s=3.0)
    now[0] += 2.0
    await controller.report("m", "replica-0", REPLICA)
    now[0] += 2.0  # replica-1 last reported 4 s ago
    snapshot = (await controller.snapshot())["models"]["m"]
    assert snapshot["replicas"] == 1 and snapshot["budget_tokens"] == 1000


async def test_without_any_replica_report_requests_wait_for_capacity(make_controller):
    controller = await make_controller(replicas=0)
    waiting = asyncio.create_task(controller.admit(ticket()))
    await until(lambda: "m" in controller._pools and controller._pools["m"].queue.length == 1)
    await controller.report("m", "replica-0", REPLICA)
    assert (await asyncio.wait_for(waiting, 0.5)).admitted


async def test_requests_that_waited_for_the_first_report_are_charged_against_it(make_controller):
    controller = await make_controller(replicas=0)
    waiting = [asyncio.create_task(controller.admit(ticket(n))) for n in range(6)]
    await until(lambda: "m" in controller._pools and controller._pools["m"].queue.length == 6)
    await controller.report("m", "replica-0", REPLICA)  # four sequence slots
    await until(lambda: sum(task.done() for task in waiting) == 4)
    assert controller._pools["m"].queue.length == 2
    for task in waiting:
        task.cancel()


async def test_max_in_flight_caps_the_sequences_whatever_replicas_report(make_controller):
    controller = await make_controller(max_in_flight=2)
    await fill(controller, 2)
    waiting = asyncio.create_task(controller.admit(ticket(3)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    waiting.cancel()


# ------------------------------------------------------------------ the queue


async def test_a_waiting_request_starts_when_a_lease_is_released(make_controller):
    controller = await make_controller()
    leases = await fill(controller)
    waiting = asyncio.create_task(controller.admit(ticket(5)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    assert await controller.release_many([leases[0].lease_id]) == 1
    decision = await asyncio.wait_for(waiting, 0.5)
    assert decision.admitted and decision.lease_id not in {lease.lease_id for lease in leases}
    assert controller._metrics.queued_count == 1 and len(controller._metrics.waits) == 1


async def test_waiters_of_one_class_and_tenant_start_in_arrival_order(make_controller):
    controller = await make_controller()
    leases = [decision.lease_id for decision in await fill(controller)]
    order: list[int] = []

    async def wait_then_record(n: int) -> None:
        await controller.admit(ticket(n))
        order.append(n)

    tasks = []
    for n in range(10, 13):
        tasks.append(asyncio.create_task(wait_then_record(n)))
        await until(lambda n=n: controller._pools["m"].queue.length == n - 9)
    for lease in leases[:3]:
        await controller.release_many([lease])
    await asyncio.wait_for(asyncio.gather(*tasks), 0.5)
    assert order == [10, 11, 12]


async def test_a_higher_class_goes_ahead_of_earlier_waiters(make_controller):
    controller = await make_controller(
        classes={"interactive": {"ttft_slo_s": 1.0}, "batch": {"ttft_slo_s": 5.0, "priority": 1}},
        default_class="interactive",
        tenants=[{"name": "nightly", "class": "batch"}, {"name": "chat", "class": "interactive"}])
    leases = await fill(controller, tenant="chat")
    batch = asyncio.create_task(controller.admit(ticket(10, "nightly")))
    await until(lambda: controller._pools["m"].queue.length == 1)
    chat = asyncio.create_task(controller.admit(ticket(11, "chat")))
    await until(lambda: controller._pools["m"].queue.length == 2)
    await controller.release_many([leases[0].lease_id])
    assert (await asyncio.wait_for(chat, 0.5)).admitted
    assert not batch.done()
    batch.cancel()


async def test_a_request_may_lower_its_priority_but_not_raise_it(make_controller):
    controller = await make_controller(
        classes={"interactive": {"ttft_slo_s": 1.0}, "batch": {"ttft_slo_s": 5.0, "priority": 1}},
        default_class="interactive", tenants=[{"name": "nightly", "class": "batch"}])
    assert controller._service_class(controller._config.tenant("t"), "batch") == "batch"
    assert controller._service_class(controller._config.tenant("nightly"), "interactive") == "batch"
    assert controller._service_class(controller._config.tenant("t"), None) == "interactive"


async def test_a_request_that_cannot_start_before_its_deadline_is_refused_at_once(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 1.0, "max_queue_wait_s": 0.7}})
    await learn_hold_time(controller, 0.3)  # each lease is held ~0.3 s
    await fill(controller)
    # Four leases end in ~0.3 s, then the four waiters' leases: the 9th would start after ~0.6 s.
    waiters = [asyncio.create_task(controller.admit(ticket(n))) for n in range(10, 14)]
    await until(lambda: controller._pools["m"].queue.length == 4)
    started = time.monotonic()
    refused = await controller.admit(ticket(20))
    assert time.monotonic() - started < 0.05
    assert refused.outcome is Outcome.OVERLOADED and refused.status == 503
    assert refused.lease_id is None and "overloaded" in refused.message
    assert 0.5 < refused.retry_after_s < 1.0
    for waiter in waiters:
        waiter.cancel()


async def test_an_overload_refusal_says_how_long_a_like_request_would_be_refused(make_controller):
    now = [0.0]
    controller = await make_controller(clock=lambda: now[0],
                                       classes={"default": {"ttft_slo_s": 1.0, "max_queue_wait_s": 0.7}})
    leases = await fill(controller)
    now[0] = 0.3
    await controller.release_many([decision.lease_id for decision in leases])  # each held 0.3 s
    await fill(controller)
    waiters = [asyncio.create_task(controller.admit(ticket(n))) for n in range(10, 14)]
    await until(lambda: controller._pools["m"].queue.length == 4)
    # The four in flight end at 0.6 s and the four waiting at 0.9 s, when the next could
    # start: 0.6 s away, which padded by the margin misses a 0.7 s wait.
    refused = await controller.admit(ticket(20))
    assert refused.outcome is Outcome.OVERLOADED
    assert refused.alike_refused_for_s == pytest.approx((0.6 * FORESIGHT_MARGIN - 0.7) / FORESIGHT_MARGIN)
    now[0] = 0.3 + 0.9 * refused.alike_refused_for_s
    assert (await controller.admit(ticket(21))).outcome is Outcome.OVERLOADED
    now[0] = 0.3 + 1.1 * refused.alike_refused_for_s
    later = asyncio.create_task(controller.admit(ticket(22)))
    await until(lambda: controller._pools["m"].queue.length == 5)  # it waits: it can start in time
    for waiter in [*waiters, later]:
        waiter.cancel()


async def test_leases_held_longer_than_foreseen_slow_the_foreseen_drain(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 0.6, "max_queue_wait_s": 0.5}})
    await learn_hold_time(controller, 0.05)  # the pace learned while requests were quick
    await fill(controller)
    await asyncio.sleep(0.4)  # and now all four are held eight times as long
    waiters = [asyncio.create_task(controller.admit(ticket(n))) for n in range(10, 14)]
    await until(lambda: controller._pools["m"].queue.length == 4)
    # Beyond the four in flight the budget must turn over once more: at the pace the
    # leases show, later than this request may wait; at the learned one, well within.
    refused = await controller.admit(ticket(20))
    assert refused.outcome is Outcome.OVERLOADED
    for waiter in waiters:
        waiter.cancel()


async def test_a_pace_learned_with_few_requests_in_flight_is_stretched_for_more(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 1.0, "max_queue_wait_s": 0.5}})
    await learn_hold_time(controller, 0.1, at_once=1)  # alone, a request was held 0.1 s
    await fill(controller)  # four at once, batched by the engine: each is held about four times as long
    started = time.monotonic()
    refused = await controller.admit(ticket(10))
    # Foreseen to start in ~0.4 s, not ~0.1 s: with the margin, beyond its 0.5 s wait.
    assert refused.outcome is Outcome.OVERLOADED and time.monotonic() - started < 0.05


async def taught_alone(make_controller) -> tuple[AdmissionController, list[float]]:
    """A controller on a settable clock (`now[0]`) that saw one request alone take 0.1 s for
    its 50 tokens, waiting at most 0.3 s."""
    now = [100.0]
    controller = await make_controller(clock=lambda: now[0], report_stale_after_s=1e9,
                                       classes={"default": {"ttft_slo_s": 1.0, "max_queue_wait_s": 0.3}})
    alone = (await controller.admit(ticket(0))).lease_id
    now[0] += 0.1
    await controller.release_many([alone])
    return controller, now


async def test_a_lease_that_ran_in_a_quiet_engine_is_foreseen_to_end_by_its_progress(make_controller):
    controller, now = await taught_alone(make_controller)
    early = (await controller.admit(ticket(1))).lease_id
    now[0] += 0.08  # four fifths of the way, still alone
    await fill(controller, 3)  # then the engine fills, each now about four times slower
    # The early one has ~10 tokens left (~0.08 s at four at once), not 0.32 s of its 0.4.
    waiting = asyncio.create_task(controller.admit(ticket(10)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    await controller.release_many([early])
    assert (await asyncio.wait_for(waiting, 0.5)).admitted


async def test_a_flood_is_foreseen_at_the_pace_the_engine_showed_at_that_crowd(make_controller):
    controller, now = await taught_alone(make_controller)
    crowd = [decision.lease_id for decision in await fill(controller, 4)]
    now[0] += 0.12  # four at once took 0.12 s each: this engine batches, far from 4x slower
    await controller.release_many(crowd)
    leases = [decision.lease_id for decision in await fill(controller, 4)]
    # Stretched in proportion from the lone request, the first would end in 0.4 s (0.8 s
    # with the margin, past the 0.3 s wait limit); at the pace shown at four, in 0.12 s.
    waiting = asyncio.create_task(controller.admit(ticket(10)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    now[0] += 0.12
    await controller.release_many(leases[:1])
    assert (await asyncio.wait_for(waiting, 0.5)).admitted


async def test_the_leases_of_a_tenant_whose_room_is_kept_do_not_bring_a_floods_start_closer(make_controller):
    controller, now = await taught_alone(make_controller)  # tenant "t" floods from here on
    light = (await controller.admit(ticket(1, "light"))).lease_id
    now[0] += 0.06  # light's lone request is most of the way through
    await fill(controller, 2)  # t's share: half the slots
    # t is past its share: light is kept 1.5 slots and holds one, so t must wait for room.
    # Light's lease ends first, but only to refill light's room; t's own end ~0.3 s on
    # (3x the lone pace, at three in flight): with the margin, past its 0.3 s wait limit.
    started = time.monotonic()
    refused = await controller.admit(ticket(10))
    assert refused.outcome is Outcome.OVERLOADED and time.monotonic() - started < 0.05
    await controller.release_many([light])


def steady_pool(teacher: str) -> tuple[ModelPool, Budget]:
    """A pool on one replica of REPLICA that saw a lone request of `teacher` take 0.1 s for 50 tokens."""
    pool = ModelPool("m", Capacity(stale_after_s=1e9), fair_share_window_s=10.0)
    pool.capacity.report("replica-0", REPLICA, 0.0)
    budget = pool.capacity.budget(0.0)
    pool.finish(grant(pool, budget, teacher, 0.0), Usage(50, 50), now=0.1)
    return pool, budget


def grant(pool: ModelPool, budget: Budget, tenant: str, now: float, priority: int = 0):
    waiter = Waiter(ticket(0, tenant), "default", priority, 1.0, 100, 50, budget.charge(100), now + 0.3, now)
    return pool.grant(waiter, f"lease-{tenant}-{now}-{len(pool.leases)}", budget, now, ttl_s=60.0)


def test_what_tenants_served_first_are_granted_meanwhile_puts_off_a_requests_start():
    def foreseen(trickler_priority: int) -> float:
        pool, budget = steady_pool(teacher="served")
        for tick in range(20):  # quick requests (a token each: they teach no pace)
            now = 0.2 + tick / 10
            for tenant, priority in [("served", 0), ("served", 0), ("trickler", trickler_priority)]:
                pool.finish(grant(pool, budget, tenant, now, priority), Usage(50, 1), now=now)
        for n in range(4):  # then "served" takes every slot, one every 0.02 s
            grant(pool, budget, "served", 2.2 + n / 50)
        now = 2.26
        waiter = Waiter(ticket(9, "asking"), "default", 0, 1.0, 100, 50, budget.charge(100), now + 0.3, now)
        pool.note_demand("asking", 1.0, 0, now, asking=waiter.charge)  # level with the least served
        pool.enqueue(waiter, budget, now)
        return pool.foreseen_wait(waiter, budget, now)

    # Of its class and served no more, the trickler's next requests go first: "asking"
    # starts not at the first lease end but at a later one. Of a lower class, they do not.
    assert foreseen(trickler_priority=0) > 1.2 * foreseen(trickler_priority=1) > 0


def test_a_tenant_held_to_its_share_is_foreseen_to_turn_over_only_its_own_room():
    pool, budget = steady_pool(teacher="flood")
    pool.finish(grant(pool, budget, "light", 0.2), Usage(50, 1), now=0.2)  # light is active
    for _ in range(2):  # flood's share: half the slots; light is kept one and a half
        grant(pool, budget, "flood", 0.3)
    waiters = [Waiter(ticket(n, "flood"), "default", 0, 1.0, 100, 50, budget.charge(100), 10.0, 0.3)
               for n in range(6)]
    for waiter in waiters:
        pool.note_demand("flood", 1.0, 0, 0.3, asking=waiter.charge)
        pool.enqueue(waiter, budget, 0.3)
    # Flood's two leases end in 0.2 s (twice the lone pace, at two in flight); then its room
    # turns over two at a time, not the whole budget's four: the sixth starts at 0.6 s.
    assert pool.foreseen_wait(waiters[-1], budget, 0.3) == pytest.approx(0.6)


async def test_a_prompt_estimate_near_the_context_does_not_make_requests_look_instant(make_controller):
    roomy = EngineStats(kv_capacity_tokens=10_000, max_num_seqs=4, max_model_len=1000)
    controller = await make_controller(stats=roomy, classes={"default": {"ttft_slo_s": 0.5, "max_queue_wait_s": 0.15}})
    await learn_hold_time(controller, 0.1)  # 50 output tokens in 0.1 s
    for n in range(4):  # estimated at 990 prompt tokens: the context leaves room for 10 more
        assert (await controller.admit(ticket(n, prompt=990, max_tokens=50))).admitted
    started = time.monotonic()
    refused = await controller.admit(ticket(10))
    # They may well generate all 50 (the estimate may run high): foreseen to end in ~0.1 s, not ~0.02 s.
    assert refused.outcome is Outcome.OVERLOADED and time.monotonic() - started < 0.05


async def test_a_waiting_request_whose_start_slips_past_its_deadline_is_refused_before_it(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 0.6, "max_queue_wait_s": 0.5}})
    await learn_hold_time(controller, 0.05)  # requests were quick when they were queued
    leases = await fill(controller)
    waiters = [asyncio.create_task(controller.admit(ticket(n))) for n in range(10, 15)]
    await until(lambda: controller._pools["m"].queue.length == 5)  # all foreseen to start in time
    await asyncio.sleep(0.3)  # but the four in flight are held six times as long
    started = time.monotonic()
    await controller.release_many([leases[0].lease_id])
    assert (await asyncio.wait_for(waiters[0], 0.1)).admitted
    # The last in line now needs the budget to turn over once more at the pace the leases
    # show: later than its deadline. It is told so now, not when the deadline passes.
    refused = await asyncio.wait_for(waiters[-1], 0.1)
    assert time.monotonic() - started < 0.1
    assert refused.outcome is Outcome.OVERLOADED and refused.retry_after_s > 0
    assert "no longer start" in refused.message
    for waiter in waiters[1:-1]:
        waiter.cancel()


async def test_a_waiting_request_that_can_still_start_in_time_keeps_its_place(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 2.0, "max_queue_wait_s": 1.5}})
    await learn_hold_time(controller, 0.05)
    leases = await fill(controller)
    waiters = [asyncio.create_task(controller.admit(ticket(n))) for n in range(10, 12)]
    await until(lambda: controller._pools["m"].queue.length == 2)
    await controller.release_many([leases[0].lease_id])
    assert (await asyncio.wait_for(waiters[0], 0.1)).admitted
    await asyncio.sleep(0.05)
    assert not waiters[1].done() and await queued(controller) == 1
    waiters[1].cancel()


async def test_a_request_that_can_start_in_time_waits(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 1.0}})
    await learn_hold_time(controller, 0.1)
    leases = await fill(controller)
    waiting = asyncio.create_task(controller.admit(ticket(10)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    await asyncio.sleep(0.05)
    await controller.release_many([leases[0].lease_id])
    assert (await asyncio.wait_for(waiting, 0.5)).admitted


async def test_waiting_past_the_deadline_is_refused_with_a_queue_timeout(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 0.1, "max_queue_wait_s": 0.05}})
    await fill(controller)  # nothing released yet: the drain cannot be foreseen
    started = time.monotonic()
    decision = await controller.admit(ticket(5))
    assert decision.outcome is Outcome.QUEUE_TIMEOUT
    assert 0.04 <= time.monotonic() - started < 0.5
    assert await queued(controller) == 0


async def test_queue_timeout_bounds_every_class(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 60.0}}, queue_timeout_s=0.05)
    await fill(controller)
    assert (await controller.admit(ticket(5))).outcome is Outcome.QUEUE_TIMEOUT


async def test_a_full_queue_refuses_with_retry_after(make_controller):
    controller = await make_controller(max_queued=1)
    await fill(controller)
    first = asyncio.create_task(controller.admit(ticket(5)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    refused = await controller.admit(ticket(6))
    assert refused.outcome is Outcome.QUEUE_FULL and refused.status == 503
    assert await queued(controller) == 1
    first.cancel()


async def test_a_cancelled_waiter_leaves_the_queue_and_its_tenant_is_refunded(make_controller):
    controller = await make_controller(tenants=[{"name": "t", "limits": {"max_concurrent": 5}}])
    leases = await fill(controller)
    waiting = asyncio.create_task(controller.admit(ticket(5)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await queued(controller) == 0
    await controller.release_many([leases[0].lease_id])
    assert (await controller.admit(ticket(6))).admitted  # 5th concurrent request is allowed again


async def test_a_waiter_cancelled_as_it_is_granted_hands_its_lease_back(make_controller):
    controller = await make_controller()
    leases = await fill(controller)
    waiting = asyncio.create_task(controller.admit(ticket(5)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    await controller.release_many([leases[0].lease_id])  # grants the waiter ...
    waiting.cancel()  # ... which gives up before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await controller.snapshot())["in_flight"] == 3


# -------------------------------------------------------------------- tenants


async def test_requests_per_minute_are_limited_per_tenant_with_429(make_controller):
    controller = await make_controller(tenants=[{"name": "t", "limits": {"requests_per_minute": 2}}])
    first, second = await controller.admit(ticket(0)), await controller.admit(ticket(1))
    assert first.limits.remaining_requests == 1 and second.limits.remaining_requests == 0
    refused = await controller.admit(ticket(2))
    assert refused.outcome is Outcome.REQUESTS_PER_MINUTE and refused.status == 429
    assert 25 <= refused.retry_after_s <= 30  # one request refills every 30 s
    assert refused.limits.limit_requests == 2
    assert (await controller.admit(ticket(3, tenant="other"))).admitted


async def test_tokens_per_minute_count_the_prompt_and_max_output(make_controller):
    controller = await make_controller(tenants=[{"name": "t", "limits": {"tokens_per_minute": 250}}])
    admitted = await controller.admit(ticket(0, prompt=50, max_tokens=100))
    assert admitted.limits.limit_tokens == 250 and admitted.limits.remaining_tokens == 100
    refused = await controller.admit(ticket(1, prompt=50, max_tokens=100))
    assert refused.outcome is Outcome.TOKENS_PER_MINUTE and refused.status == 429
    assert refused.retry_after_s > 0


async def test_tokens_are_corrected_by_what_the_request_used(make_controller):
    controller = await make_controller(tenants=[{"name": "t", "limits": {"tokens_per_minute": 250}}])
    admitted = await controller.admit(ticket(0, prompt=50, max_tokens=100))
    await controller.release_many([(admitted.lease_id, Usage(50, 10))])  # 90 tokens unused
    again = await controller.admit(ticket(1, prompt=50, max_tokens=100))
    assert again.admitted and again.limits.remaining_tokens == 40


async def test_a_request_larger_than_the_tokens_per_minute_is_refused_without_retry(make_controller):
    controller = await make_controller(tenants=[{"name": "t", "limits": {"tokens_per_minute": 100}}])
    refused = await controller.admit(ticket(0, prompt=50, max_tokens=100))
    assert refused.outcome is Outcome.TOO_LARGE and refused.status == 429
    assert "too large" in refused.message


async def test_concurrent_requests_are_limited_per_tenant(make_controller):
    controller = await make_controller(tenants=[{"name": "t", "limits": {"max_concurrent": 2}}])
    first = await controller.admit(ticket(0))
    await controller.admit(ticket(1))
    assert (await controller.admit(ticket(2))).outcome is Outcome.CONCURRENCY
    await controller.release_many([first.lease_id])
    assert (await controller.admit(ticket(3))).admitted


async def test_a_tenant_without_limits_gets_no_rate_limit_values(make_controller):
    controller = await make_controller()
    assert (await controller.admit(ticket())).limits is None


async def test_refusals_from_the_queue_give_the_tenants_charge_back(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 0.1, "max_queue_wait_s": 0.02}},
                                       tenants=[{"name": "t", "limits": {"requests_per_minute": 6}}])
    await fill(controller)
    assert (await controller.admit(ticket(5))).outcome is Outcome.QUEUE_TIMEOUT
    assert (await controller.admit(ticket(6, tenant="x"))).outcome is Outcome.QUEUE_TIMEOUT
    refused = await controller.admit(ticket(7))
    assert refused.limits.remaining_requests == 2  # 6 - 4 admitted; the timed-out one was refunded


# ------------------------------------------------------------------- fairness


async def test_a_light_tenant_goes_ahead_of_a_flooding_tenants_backlog(make_controller):
    controller = await make_controller(max_queued=100, fair_share_window_s=60.0)
    leases = [decision.lease_id for decision in await fill(controller, tenant="flood")]
    backlog = [asyncio.create_task(controller.admit(ticket(n, "flood"))) for n in range(10, 15)]
    await until(lambda: controller._pools["m"].queue.length == 5)
    light = asyncio.create_task(controller.admit(ticket(20, "light")))
    await until(lambda: controller._pools["m"].queue.length == 6)
    await controller.release_many(leases[:1])
    assert (await asyncio.wait_for(light, 0.5)).admitted
    assert sum(task.done() for task in backlog) == 0
    for task in backlog:
        task.cancel()


async def test_a_tenant_over_its_share_cannot_take_the_room_an_active_tenant_is_owed(make_controller):
    controller = await make_controller(
        stats=EngineStats(kv_capacity_tokens=2000, max_num_seqs=8, max_model_len=1000))
    # light ran two requests at once lately: of its share (half), that and half again is kept
    light = [await controller.admit(ticket(n, "light")) for n in range(2)]
    await controller.release_many([decision.lease_id for decision in light])
    flood = [await controller.admit(ticket(n, "flood")) for n in range(2, 7)]
    assert all(decision.admitted for decision in flood)  # 8 slots - 3 kept
    over = asyncio.create_task(controller.admit(ticket(9, "flood")))
    await until(lambda: controller._pools["m"].queue.length == 1)
    started = time.monotonic()
    assert (await controller.admit(ticket(10, "light"))).admitted  # starts at once, the room was kept
    assert time.monotonic() - started < 0.05
    over.cancel()


async def test_a_light_tenants_burst_beyond_its_share_takes_the_slot_a_flood_frees(make_controller):
    controller = await make_controller(
        max_queued=100, stats=EngineStats(kv_capacity_tokens=2000, max_num_seqs=8, max_model_len=1000))
    await fill(controller, 4, tenant="light")  # its share of slots
    flood = await fill(controller, 4, tenant="flood")
    backlog = [asyncio.create_task(controller.admit(ticket(n, "flood"))) for n in range(10, 12)]
    await until(lambda: controller._pools["m"].queue.length == 2)
    burst = asyncio.create_task(controller.admit(ticket(20, "light")))
    await until(lambda: controller._pools["m"].queue.length == 3)
    await controller.release_many([flood[0].lease_id])
    # flood is now below its share of slots, but it has been served more tokens than light
    assert (await asyncio.wait_for(burst, 0.5)).admitted
    assert not any(task.done() for task in backlog)
    for task in backlog:
        task.cancel()


async def test_a_new_flooding_tenant_cannot_take_the_room_of_one_served_all_along(make_controller):
    controller = await make_controller(
        max_queued=100, stats=EngineStats(kv_capacity_tokens=2000, max_num_seqs=8, max_model_len=1000))
    for n in range(40):  # light's counter is far above a newcomer's zero
        await controller.release_many([(await controller.admit(ticket(n, "light"))).lease_id])
    await fill(controller, 2, tenant="light")  # room kept for it: its demand and half again
    await fill(controller, 5, tenant="flood")
    over = asyncio.create_task(controller.admit(ticket(99, "flood")))
    await until(lambda: controller._pools["m"].queue.length == 1)
    assert not over.done()
    over.cancel()


async def test_a_light_tenant_back_from_a_pause_keeps_its_room_from_a_flood(make_controller):
    controller = await make_controller(
        max_queued=100, stats=EngineStats(kv_capacity_tokens=2000, max_num_seqs=8, max_model_len=1000))
    await controller.release_many([d.lease_id for d in await fill(controller, 4, tenant="light")])
    await fill(controller, 4, tenant="flood")
    backlog = [asyncio.create_task(controller.admit(ticket(n, "flood"))) for n in range(10, 12)]
    await until(lambda: controller._pools["m"].queue.length == 2)
    await fill(controller, 2, tenant="light")  # it had no request in flight: it starts afresh
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in backlog)  # light's other two slots are still kept
    for task in backlog:
        task.cancel()


async def test_the_engine_queues_a_tenant_served_more_than_average_after_the_others(make_controller):
    controller = await make_controller(
        stats=EngineStats(kv_capacity_tokens=2000, max_num_seqs=8, max_model_len=1000),
        classes={"default": {"ttft_slo_s": 1.0}, "batch": {"ttft_slo_s": 60.0, "priority": 1}})
    first = await controller.admit(ticket(0, "light"))
    assert first.engine_priority == 0  # alone, it is the average
    await controller.release_many([first.lease_id])
    await fill(controller, 4, tenant="flood")  # it starts level with light, then passes it
    assert (await controller.admit(ticket(10, "light"))).engine_priority == 0
    assert (await controller.admit(ticket(11, "flood"))).engine_priority == 1
    assert (await controller.admit(ticket(12, "light", priority_class="batch"))).engine_priority == 2


def test_a_tenant_whose_leases_all_ended_holds_nothing_whatever_budgets_charged_them():
    pool = ModelPool("m", Capacity(), fair_share_window_s=10.0)
    # the budget tightened between grants, so each lease was charged a different slot
    slots = [250.0, 300.0, 270.0, 364.50000000000006, 328.05000000000007, 295.2450000000001]
    leases = [pool.grant(Waiter(ticket(n, "old"), "default", 0, 1.0, 100, 50, slot, 10.0, 0.0),
                         f"lease-{n}", Budget(tokens=slot, sequences=1, replicas=1), now=0.0, ttl_s=60.0)
              for n, slot in enumerate(slots)]
    for lease in leases:
        pool.finish(lease, None, now=1.0)
    # A rounding residue would keep it "serving", and a newcomer would be lifted only to its level.
    assert "old" not in pool.serving()


async def test_alone_a_tenant_may_use_the_whole_budget(make_controller):
    controller = await make_controller()
    await fill(controller, 4, tenant="flood")


async def test_shares_follow_tenant_weights(make_controller):
    controller = await make_controller(
        stats=EngineStats(kv_capacity_tokens=2000, max_num_seqs=8, max_model_len=1000),
        tenants=[{"name": "heavy", "weight": 3.0}])
    light = [await controller.admit(ticket(n, "light")) for n in range(4)]  # light's demand: 4 slots
    await controller.release_many([decision.lease_id for decision in light])
    heavy = [await controller.admit(ticket(n, "heavy")) for n in range(4, 10)]  # its 3/4: six slots
    assert all(decision.admitted for decision in heavy)
    over = asyncio.create_task(controller.admit(ticket(9, "heavy")))
    await until(lambda: controller._pools["m"].queue.length == 1)
    over.cancel()


# --------------------------------------------------------------------- leases


async def test_releasing_an_unknown_or_released_lease_counts_nothing(make_controller):
    controller = await make_controller()
    lease = (await controller.admit(ticket())).lease_id
    assert await controller.release_many([lease, "no-such-lease"]) == 1
    assert await controller.release_many([lease]) == 0


async def test_expire_drops_only_leases_past_their_ttl_and_wakes_waiters(make_controller):
    controller = await make_controller(lease_ttl_s=10.0, report_stale_after_s=60.0)
    await fill(controller)
    waiting = asyncio.create_task(controller.admit(ticket(5)))
    await until(lambda: controller._pools["m"].queue.length == 1)
    now = time.monotonic()
    assert controller.expire(now) == 0
    assert controller.expire(now + 11.0) == 4
    assert (await asyncio.wait_for(waiting, 0.5)).admitted
    assert (await controller.snapshot())["in_flight"] == 1


async def test_an_expired_lease_can_no_longer_be_released(make_controller):
    controller = await make_controller(lease_ttl_s=1.0)
    lease = (await controller.admit(ticket())).lease_id
    controller.expire(time.monotonic() + 2.0)
    assert await controller.release_many([lease]) == 0
    assert (await controller.snapshot())["models"]["m"]["in_flight_tokens"] == 0


async def test_usage_teaches_the_prompt_estimate(make_controller):
    controller = await make_controller()
    for n in range(40):
        lease = (await controller.admit(ticket(n, prompt=100))).lease_id
        await controller.release_many([(lease, Usage(prompt_tokens=150, completion_tokens=50))])
    assert 1.3 < (await controller.snapshot())["models"]["m"]["prompt_scale"] <= 1.5


# -------------------------------------------------------------------- metrics


async def test_every_decision_is_counted_by_model_tenant_and_outcome(make_controller):
    controller = await make_controller(tenants=[{"name": "t", "limits": {"max_concurrent": 1}}])
    await controller.admit(ticket(0))
    await controller.admit(ticket(1))
    assert controller._metrics.decisions == [("m", "t", "admitted"), ("m", "t", "concurrency_limit_exceeded")]


def test_decisions_reach_ray_in_one_counter_update_per_kind_when_flushed():
    from serve_app.admission_metrics import AdmissionMetrics

    metrics, updates = AdmissionMetrics(), []
    metrics._decisions._requests = SimpleNamespace(inc=lambda count, tags: updates.append((count, tags["outcome"])))
    for outcome in ("admitted", "admitted", "overloaded"):
        metrics.decided("m", "t", outcome)
    assert updates == []
    metrics.flush()
    metrics.flush()
    assert sorted(updates) == [(1, "overloaded"), (2, "admitted")]


async def test_longer_requests_are_foreseen_to_hold_their_capacity_longer(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 0.5, "max_queue_wait_s": 0.3}})
    await learn_hold_time(controller, 0.1)  # 50 output tokens in 0.1 s
    for n in range(4):  # 200 output tokens: each should take ~0.4 s
        assert (await controller.admit(ticket(n, prompt=10, max_tokens=200))).admitted
    started = time.monotonic()
    refused = await controller.admit(ticket(9, max_tokens=5))
    assert refused.outcome is Outcome.OVERLOADED and time.monotonic() - started < 0.05


async def test_room_is_kept_for_a_tenant_only_within_the_fair_share_window(make_controller):
    now = [100.0]
    controller = await make_controller(clock=lambda: now[0], fair_share_window_s=10.0,
                                       report_stale_after_s=1e9)
    light = [await controller.admit(ticket(n, "light")) for n in range(2)]
    await controller.release_many([decision.lease_id for decision in light])
    now[0] += 11.0  # light has been quiet for longer than the window
    await fill(controller, 4, tenant="flood")


async def test_the_engines_time_to_first_bytes_is_kept_out_of_the_wait(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 1.0}})
    for n in range(20):  # routers saw first bytes ~0.7 s after admission
        lease = (await controller.admit(ticket(n))).lease_id
        await controller.release_many([(lease, Usage(50, 50), 0.7)])
    await fill(controller)
    started = time.monotonic()
    decision = await controller.admit(ticket(99))  # may wait only ~0.3 s, not 0.8 s
    assert decision.outcome is Outcome.QUEUE_TIMEOUT
    assert 0.2 < time.monotonic() - started < 0.5


async def test_a_tenant_refused_for_want_of_room_gets_the_next_room_kept_for_it(make_controller):
    controller = await make_controller(classes={"default": {"ttft_slo_s": 0.5, "max_queue_wait_s": 0.3}})
    await learn_hold_time(controller, 0.1, "flood")  # 50 output tokens in 0.1 s
    flood = [await controller.admit(ticket(n, "flood", prompt=10, max_tokens=200)) for n in range(4)]
    assert all(decision.admitted for decision in flood)
    assert (await controller.admit(ticket(10, "light"))).outcome is Outcome.OVERLOADED  # ~0.4 s to a slot
    await controller.release_many([flood[0].lease_id])
    assert not (await controller.admit(ticket(11, "flood"))).admitted  # the freed slot is kept for light
    assert (await controller.admit(ticket(12, "light"))).admitted


# ----------------------------------------------------------------- burst room

BURSTY = EngineStats(kv_capacity_tokens=3000, max_num_seqs=12, max_model_len=1000)
"""Twelve slots of 250 tokens: with a burst fraction of 1/3, eight within the shares, four kept."""


async def test_a_burst_of_a_tenant_granted_below_its_share_starts_at_once_in_the_burst_room(make_controller):
    controller = await make_controller(max_queued=100, stats=BURSTY, burst_fraction=1 / 3)
    await controller.release_many([d.lease_id for d in await fill(controller, 4, tenant="flood")])
    await fill(controller, 2, tenant="light")
    flood = await fill(controller, 5, tenant="flood")  # all the shares' room but the slot kept for light
    backlog = [asyncio.create_task(controller.admit(ticket(n, "flood"))) for n in range(10, 12)]
    await until(lambda: controller._pools["m"].queue.length == 2)
    # Light's burst: one in the room kept for it, three in the burst room, none waiting for
    # a flood's lease to end (the engine would not preempt one to make room).
    burst = [await controller.admit(ticket(20 + n, "light")) for n in range(4)]
    assert all(decision.admitted for decision in burst)
    assert controller._pools["m"].burst_in_flight == 3 * 250
    await controller.release_many([burst[-1].lease_id])  # a burst lease frees burst room only
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in backlog)
    await controller.release_many([flood[0].lease_id])
    assert (await asyncio.wait_for(backlog[0], 0.5)).admitted
    backlog[1].cancel()


async def test_a_tenant_alone_never_uses_the_burst_room(make_controller):
    controller = await make_controller(stats=BURSTY, burst_fraction=1 / 3,
                                       classes={"default": {"ttft_slo_s": 0.1, "max_queue_wait_s": 0.05}})
    await fill(controller, 8, tenant="alone")
    assert (await controller.admit(ticket(9, "alone"))).outcome is Outcome.QUEUE_TIMEOUT


async def test_a_tenant_granted_more_than_its_share_never_uses_the_burst_room(make_controller):
    controller = await make_controller(stats=BURSTY, burst_fraction=1 / 3,
                                       classes={"default": {"ttft_slo_s": 0.1, "max_queue_wait_s": 0.05}})
    await fill(controller, 2, tenant="light")
    await fill(controller, 5, tenant="flood")  # light is kept a slot more: the shares are full
    assert (await controller.admit(ticket(9, "flood"))).outcome is Outcome.QUEUE_TIMEOUT
    assert (await controller.admit(ticket(10, "light"))).admitted
