"""The waiting line: classes strictly by priority, tenants by virtual token counter, FIFO per tenant."""

from __future__ import annotations

from serve_app.fair_queue import FairQueue, Waiter
from serve_app.outcomes import Ticket


def waiter(tenant: str, n: int, priority: int = 0, charge: float = 100.0, weight: float = 1.0) -> Waiter:
    return Waiter(Ticket("m", tenant, f"{tenant}-{n}", 10, 10), "c", priority, weight, 20, 10, charge,
                  deadline=100.0, arrived=float(n))


def names(queue: FairQueue) -> list[str]:
    return [w.ticket.request_id for w in queue.heads()]


def test_higher_classes_come_first_whatever_the_counters():
    queue = FairQueue()
    queue.served("vip", 10_000, 1.0)
    queue.push(waiter("batch", 0, priority=1))
    queue.push(waiter("vip", 1, priority=0))
    assert names(queue) == ["vip-1", "batch-0"]


def test_within_a_class_the_tenant_served_least_goes_first():
    queue = FairQueue()
    queue.push(waiter("a", 0))
    queue.push(waiter("b", 1))
    queue.served("a", 500, 1.0)
    assert names(queue) == ["b-1", "a-0"]


def test_weights_divide_what_a_tenant_is_counted():
    queue = FairQueue()
    queue.served("heavy", 300, weight=3.0)
    queue.served("light", 200, weight=1.0)
    assert queue.counters == {"heavy": 100.0, "light": 200.0}


def test_a_tenant_that_starts_waiting_is_lifted_to_the_lowest_waiting_counter():
    queue = FairQueue()
    queue.served("busy", 1000, 1.0)
    queue.push(waiter("busy", 0))
    queue.push(waiter("idle", 1))  # idle banked nothing while it was away
    assert queue.counters["idle"] == 1000
    assert names(queue) == ["busy-0", "idle-1"]


def test_a_tenant_that_starts_waiting_while_none_wait_is_lifted_to_those_being_served():
    queue = FairQueue()
    queue.served("light", 1000, 1.0)  # served all along, never had to wait
    queue.push(waiter("flood", 0), serving=["light", "flood"])
    assert queue.counters["flood"] == 1000  # its idle past banks nothing against light
    queue.push(waiter("light", 1), serving=["light", "flood"])
    queue.served("flood", 100, 1.0)
    assert names(queue) == ["light-1", "flood-0"]


def test_a_tenant_with_requests_in_flight_stays_behind_by_at_most_its_credit():
    queue = FairQueue()
    queue.served("flood", 10_000, 1.0)
    queue.served("light", 1_000, 1.0)  # served all along, far less than flood
    queue.push(waiter("light", 0), serving=["light", "flood"], credit=2_000)
    assert queue.counters["light"] == 8_000  # it banked more than its credit
    queue.served("light", 1_000, 1.0)
    queue.remove(next(iter(queue)))
    queue.push(waiter("light", 1), serving=["light", "flood"], credit=2_000)
    assert queue.counters["light"] == 9_000  # within its credit: kept


def test_a_tenants_requests_keep_their_order_and_leave_cleanly():
    queue = FairQueue()
    first, second = waiter("a", 0), waiter("a", 1)
    queue.push(first)
    queue.push(second)
    assert names(queue) == ["a-0"]
    assert queue.remove(first) and not queue.remove(first)
    assert names(queue) == ["a-1"] and queue.length == 1 and queue.queued("a") == 100
    assert queue.remove(second) and queue.length == 0 and queue.queued("a") == 0 and list(queue) == []


def test_work_ahead_counts_higher_classes_own_backlog_and_others_until_they_pass():
    queue = FairQueue()
    queue.push(waiter("vip", 0, priority=0, charge=50))
    for n in range(5):
        queue.push(waiter("flood", n, priority=1))
    queue.served("flood", 1000, 1.0)
    light = waiter("light", 9, priority=1)
    queue.push(light)
    # light's counter is lifted to flood's (1000): flood gets nothing more before it.
    assert queue.charge_ahead(light) == 50
    second = waiter("light", 10, priority=1)
    queue.push(second)
    # after light's first (counter 1100) flood may be served 100 more.
    assert queue.charge_ahead(second) == 50 + 100 + 100
