"""The AdmissionController: the one place that decides, cluster-wide, who may start.

`admit()` returns a Decision whose outcome comes from a small enum (outcomes, not
exceptions, cross this seam; `serve_app.outcomes` maps them to HTTP). In order:

1. the tenant's limits (requests and tokens per minute, requests at once): 429;
2. the model's budget, summed from what its live replicas report (`capacity`):
   a request that fits, within its tenant's fair share (`pool`), starts now, and so
   does a light tenant's burst beyond the shares' room, in the burst room if one is kept;
3. otherwise it waits (`fair_queue`: by class, then by weighted token cost, then
   FIFO) if it can start before its class's deadline, as foreseen from when the
   leases in flight will end; if it cannot, it is refused now with 503 and a
   Retry-After, not after waiting in vain. Each time a lease ends, and every
   sweep, the foresight is redone for those waiting: one that can no longer start
   in time (the leases ahead run late) is refused then, not at its deadline.
   An arrival refusal also says how long a like request would be refused the same
   way, so routers answer a flooding tenant's next ones without asking.

Admitted capacity is held as a lease with a time-to-live, released by the router
with what the request really used (which corrects the tenant's token count, its
fair-share counter and the prompt estimate). A router that dies leaks nothing for
longer than the TTL; a restarted controller starts empty and relearns capacity
from the replicas' next reports.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterable

from serve_app.admission_metrics import AdmissionMetrics
from serve_app.capacity import Budget, Capacity
from serve_app.capacity_reporter import CONTROLLER_DEPLOYMENT
from serve_app.channel.admission_server import AdmissionServer
from serve_app.config import AdmissionConfig, Tenant
from serve_app.drain import Lease
from serve_app.fair_queue import Waiter
from serve_app.outcomes import OUTCOMES, Decision, Outcome, Ticket, Usage
from serve_app.pool import Fit, ModelPool
from serve_app.protocol import EngineStats, ReplyAddress
from serve_app.tenants import TenantLedger, Tenants

SWEEP_INTERVAL_S = 1.0
# Queue only what should start well within its wait: stalls make foreseen waits run long. At
# 1.5, vLLM's pace swung past the padding often enough that 14-77 of every ~750 refusals at 4x
# overload came after a wait (re-checks, 0.1-1.4 s); at 2 none did and goodput held.
FORESIGHT_MARGIN = 2.0
Release = tuple[str, Usage | None, float | None]
"""A lease id, what the request used and seconds from admission to its first bytes."""

__all__ = ["CONTROLLER_DEPLOYMENT", "OUTCOMES", "AdmissionController", "Decision", "Outcome",
           "Ticket", "Usage"]


def alike_refused_for(foreseen_s: float, wait_s: float) -> float:
    """How long after this refusal a like request (same tenant line, no smaller) would be
    refused too. It would join the line where this one would have, so it is foreseen to
    start at the same instant, while its deadline is later by however much later it came:
    the arrival check, `foreseen * FORESIGHT_MARGIN > wait`, holds until the margin by which
    this one missed, shrunk by the margin factor, has passed."""
    return max(0.0, (foreseen_s * FORESIGHT_MARGIN - wait_s) / FORESIGHT_MARGIN)


class AdmissionController:
    """A Serve deployment with one replica: routers call `admit` and `release_many` (over
    the admission link, `link_address`, or as handle calls), LLMServer replicas call `report`."""

    def __init__(self, config: AdmissionConfig, metrics: AdmissionMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._metrics = metrics or AdmissionMetrics()
        self._tenants = Tenants(config)
        self._pools: dict[str, ModelPool] = {}
        self._leases: dict[str, Lease] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._link: asyncio.Future[ReplyAddress] | None = None
        # Unique across restarts, so a router's release meant for a dead controller's lease
        # cannot end one of this controller's; cheaper than a uuid4 per lease.
        self._lease_prefix = uuid.uuid4().hex[:16] + "-"
        self._lease_numbers = itertools.count()

    # ------------------------------------------------------------------ API

    async def admit(self, ticket: Ticket) -> Decision:
        self._ensure_sweeper()
        now = self._clock()
        pool = self._pool(ticket.model)
        budget = pool.capacity.budget(now)
        ledger = self._tenants.ledger(ticket.tenant, now)
        waiter = self._waiter(pool, budget, ticket, ledger.tenant, now)
        refused = ledger.refusal(waiter.cost, now)
        if refused is not None:
            return self._refuse(pool, ledger, *refused, now=now)
        ledger.charge(waiter.cost, now)
        pool.note_demand(waiter.tenant, waiter.weight, waiter.priority, now, asking=waiter.charge)
        if not pool.queue.length:
            pool.start_afresh(waiter.tenant, budget, now)
            fit = pool.fit(waiter, budget, now)
            if fit.starts:
                return self._grant(pool, waiter, ledger, now, fit)
        waiter.future = asyncio.get_running_loop().create_future()
        pool.enqueue(waiter, budget, now)
        self._dispatch(pool, now)
        if waiter.future.done():
            return waiter.future.result()
        return await self._wait(pool, waiter, ledger, now)

    async def release_many(self, releases: Iterable[Release | tuple[str, Usage | None] | str]) -> int:
        """Release several leases in one call (routers batch their releases).

        Async like every method routers and replicas call: Serve runs sync methods in a
        thread pool, and this state belongs to the event loop."""
        return self.release_each(releases)

    def release_each(self, releases: Iterable[Release | tuple[str, Usage | None] | str]) -> int:
        return sum(self.release(*((item,) if isinstance(item, str) else item)) for item in releases)

    def release(self, lease_id: str, usage: Usage | None = None, first_byte_s: float | None = None) -> bool:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return False
        now = self._clock()
        self._end(lease, usage, now, released=True, first_byte_s=first_byte_s)
        return True

    async def link_address(self) -> ReplyAddress:
        """Where routers reach this replica's admission link; it starts on the first ask."""
        if self._link is None or (self._link.done() and self._link.exception()):
            self._link = asyncio.ensure_future(self._open_link())
        return await asyncio.shield(self._link)

    async def _open_link(self) -> ReplyAddress:
        import ray.util

        return await AdmissionServer(self).start(ray.util.get_node_ip_address())

    async def report(self, model: str, replica_id: str, stats: EngineStats) -> None:
        """A replica's capacity and load (every REPORT_INTERVAL_S)."""
        self._ensure_sweeper()
        now = self._clock()
        pool = self._pool(model)
        pool.capacity.report(replica_id, stats, now)
        self._dispatch(pool, now)

    def expire(self, now: float) -> int:
        """Drop leases past their TTL (their holder died); returns how many."""
        expired = [lease for lease in self._leases.values() if lease.expires_at <= now]
        for lease in expired:
            del self._leases[lease.lease_id]
            self._end(lease, None, now, released=False)
        return len(expired)

    async def snapshot(self) -> dict[str, object]:
        now = self._clock()
        models = {}
        for name, pool in self._pools.items():
            budget = pool.capacity.budget(now)
            models[name] = {"in_flight_tokens": pool.in_flight, "burst_in_flight_tokens": pool.burst_in_flight,
                            "leases": len(pool.leases),
                            "queued": pool.queue.length, "budget_tokens": budget.tokens,
                            "sequences": budget.sequences, "replicas": budget.replicas,
                            "token_s": pool.drain.crowded_pace() if pool.drain.pace.known else None,
                            "prompt_scale": pool.prompt_scale,
                            "first_byte_s": pool.first_byte.mean, "first_byte_high_s": pool.first_byte.high}
        queued = sum(pool.queue.length for pool in self._pools.values())
        return {"in_flight": len(self._leases), "queued": queued, "models": models}

    # ------------------------------------------------------------- deciding

    def _waiter(self, pool: ModelPool, budget: Budget, ticket: Ticket, tenant: Tenant, now: float) -> Waiter:
        class_name = self._service_class(tenant, ticket.priority_class)
        service_class = self._config.classes[class_name]
        # Waiting may use what the SLO leaves once the engine's own time to first bytes is taken.
        wait_s = min(service_class.queue_wait_s, self._config.queue_timeout_s,
                     max(0.0, service_class.ttft_slo_s - pool.first_byte.high))
        prompt, output = pool.cost(ticket, budget)
        return Waiter(ticket, class_name, service_class.priority, tenant.weight, prompt + output,
                      pool.foreseen_output(ticket, budget), budget.charge(prompt + output, ticket.sequences),
                      deadline=now + wait_s, arrived=now)

    def _service_class(self, tenant: Tenant, requested: str | None) -> str:
        """The tenant's class, or the requested one if it is of lower priority."""
        own = self._config.class_of(tenant)
        classes = self._config.classes
        if requested in classes and classes[requested].priority > classes[own].priority:
            return requested
        return own

    async def _wait(self, pool: ModelPool, waiter: Waiter, ledger: TenantLedger, now: float) -> Decision:
        budget = pool.capacity.budget(now)
        foreseen = pool.foreseen_wait(waiter, budget, now)
        if pool.queue.length > self._config.max_queued:
            return self._drop(pool, waiter, ledger, Outcome.QUEUE_FULL, foreseen, now,
                              "the server is at capacity and its queue is full")
        if foreseen is not None and now + foreseen * FORESIGHT_MARGIN > waiter.deadline:
            return self._drop(pool, waiter, ledger, Outcome.OVERLOADED, foreseen, now,
                              f"the server is overloaded: this request could not start within "
                              f"{waiter.deadline - now:.3g} s (its class's wait limit)",
                              alike_refused_for_s=alike_refused_for(foreseen, waiter.deadline - now))
        self._metrics.queued(pool.name, waiter.tenant)
        future = waiter.future
        try:
            async with asyncio.timeout(waiter.deadline - now):
                decision = await asyncio.shield(future)
        except TimeoutError:
            if future.done():  # granted in the same instant the deadline passed
                return future.result()
            later = self._clock()
            retry_s = pool.drain.wait_s(waiter.charge, budget, later)
            return self._drop(pool, waiter, ledger, Outcome.QUEUE_TIMEOUT, retry_s, later,
                              "no capacity freed up in time for this request's class")
        except asyncio.CancelledError:  # the router gave up: hand back what it was granted
            if pool.queue.remove(waiter):
                ledger.refund(waiter.cost, self._clock())
            elif future.done() and future.result().lease_id:
                self.release(future.result().lease_id)
            raise
        if decision.admitted:
            self._metrics.waited(pool.name, waiter.service_class, self._clock() - waiter.arrived)
        return decision

    def _dispatch(self, pool: ModelPool, now: float) -> None:
        """Start waiting requests while the next in line fits. One that finds no room blocks
        those behind it (big requests are not starved), but for a start in the burst room."""
        if not pool.queue.length:
            return
        budget = pool.capacity.budget(now)
        while pool.queue.length:
            blocked = False
            for waiter in pool.queue.heads():
                fit = pool.fit(waiter, budget, now)
                if fit is Fit.BURST or (fit is Fit.FITS and not blocked):
                    pool.queue.remove(waiter)
                    ledger = self._tenants.ledger(waiter.tenant, now)
                    waiter.future.set_result(self._grant(pool, waiter, ledger, now, fit))
                    break
                blocked = blocked or fit is Fit.NO_ROOM
            else:
                return  # every head is beyond its tenant's share, or blocked

    def _refuse_late(self, pool: ModelPool, now: float) -> None:
        """Refuse now, not at their deadline, waiting requests that can no longer start in
        time because the leases ahead of them run late. Each tenant's line is checked from
        its end: when its last request can still start in time, so can those ahead of it.
        Without the arrival check's margin: checked again at every lease end, a padded
        foresight would refuse on whichever estimate runs high, requests that would have made it."""
        budget = pool.capacity.budget(now)
        for waiter in list(pool.queue.lasts()):
            while waiter is not None and waiter.future is not None and not waiter.future.done():
                foreseen = pool.foreseen_wait(waiter, budget, now)
                if foreseen is None or now + foreseen <= waiter.deadline:
                    break
                ledger = self._tenants.ledger(waiter.tenant, now)
                waiter.future.set_result(self._drop(
                    pool, waiter, ledger, Outcome.OVERLOADED, foreseen, now,
                    f"the server is overloaded: this request could no longer start within "
                    f"{waiter.deadline - waiter.arrived:.3g} s (its class's wait limit)"))
                waiter = pool.queue.last_of(waiter.priority, waiter.tenant)

    def _grant(self, pool: ModelPool, waiter: Waiter, ledger: TenantLedger, now: float,
               fit: Fit = Fit.FITS) -> Decision:
        budget = pool.capacity.budget(now)
        engine_priority = pool.engine_priority(waiter, now)
        lease = pool.grant(waiter, f"{self._lease_prefix}{next(self._lease_numbers)}", budget, now,
                           self._config.lease_ttl_s, burst=fit is Fit.BURST)
        self._leases[lease.lease_id] = lease
        self._metrics.decided(pool.name, waiter.tenant, Outcome.ADMITTED.value)
        return Decision(Outcome.ADMITTED, lease_id=lease.lease_id, limits=ledger.rate_limits(now),
                        engine_priority=engine_priority)

    def _drop(self, pool: ModelPool, waiter: Waiter, ledger: TenantLedger, outcome: Outcome,
              retry_after_s: float | None, now: float, message: str,
              alike_refused_for_s: float | None = None) -> Decision:
        """Refuse a request that was charged and queued."""
        pool.queue.remove(waiter)
        ledger.refund(waiter.cost, now)
        pool.note_demand(waiter.tenant, waiter.weight, waiter.priority, now)
        self._dispatch(pool, now)  # it may have blocked the line
        return self._refuse(pool, ledger, outcome, retry_after_s, message, now=now,
                            alike_refused_for_s=alike_refused_for_s)

    def _refuse(self, pool: ModelPool, ledger: TenantLedger, outcome: Outcome,
                retry_after_s: float | None, message: str, *, now: float,
                alike_refused_for_s: float | None = None) -> Decision:
        self._metrics.decided(pool.name, ledger.tenant.name, outcome.value)
        return Decision(outcome, retry_after_s=retry_after_s, message=message,
                        limits=ledger.rate_limits(now), alike_refused_for_s=alike_refused_for_s)

    def _end(self, lease: Lease, usage: Usage | None, now: float, *, released: bool,
             first_byte_s: float | None = None) -> None:
        pool = self._pools[lease.model]
        pool.finish(lease, usage, now, released=released, first_byte_s=first_byte_s)
        self._tenants.ledger(lease.tenant, now).finish(lease.cost, usage.total if usage else None, now)
        pool.note_demand(lease.tenant, lease.weight, lease.priority, now)
        self._dispatch(pool, now)
        self._refuse_late(pool, now)

    def _pool(self, model: str) -> ModelPool:
        pool = self._pools.get(model)
        if pool is None:
            config = self._config
            capacity = Capacity(kv_fraction=config.kv_budget_fraction, max_sequences=config.max_in_flight,
                                stale_after_s=config.report_stale_after_s,
                                engine_queue_fraction=config.engine_queue_fraction,
                                burst_fraction=config.burst_fraction)
            pool = self._pools[model] = ModelPool(model, capacity, config.fair_share_window_s)
        return pool

    # ----------------------------------------------------------- background

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL_S, self._config.lease_ttl_s / 4))
            now = self._clock()
            self.expire(now)
            for pool in self._pools.values():
                self._dispatch(pool, now)  # replicas may have come or gone
                self._refuse_late(pool, now)  # leases may be overdue without ending
                self._publish(pool, now)
            self._metrics.flush()

    def _publish(self, pool: ModelPool, now: float) -> None:
        budget = pool.capacity.budget(now)
        self._metrics.level(pool.name, in_flight_tokens=pool.in_flight, capacity_tokens=budget.tokens,
                            in_flight_requests=len(pool.leases), queue_length=pool.queue.length,
                            replicas=budget.replicas)
