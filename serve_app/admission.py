"""The AdmissionController: the one place that decides, cluster-wide, who may start.

`admit()` returns a Decision whose outcome comes from a small enum; outcomes, not
exceptions, cross this seam, and `outcome_status` maps each one to an HTTP status.
Admitted capacity is held as a lease with a time-to-live, so a router that dies
without releasing leaks nothing for longer than the TTL.

First policy: a global cap on requests in flight and on requests queued; a queued
request waits (FIFO) until capacity frees or its queue timeout passes.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass
from enum import Enum

from serve_app.config import AdmissionConfig


class Outcome(str, Enum):
    ADMITTED = "admitted"
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    UNAVAILABLE = "unavailable"


OUTCOME_STATUS: dict[Outcome, int] = {
    Outcome.ADMITTED: 200,
    Outcome.QUEUE_FULL: 503,
    Outcome.QUEUE_TIMEOUT: 503,
    Outcome.UNAVAILABLE: 503,
}


@dataclass(frozen=True)
class Ticket:
    """What the router asks admission for."""

    model: str
    tenant: str
    cost_tokens: int
    request_id: str


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    lease_id: str | None = None
    retry_after_s: int | None = None
    message: str = ""

    @property
    def admitted(self) -> bool:
        return self.outcome is Outcome.ADMITTED


@dataclass
class _Lease:
    ticket: Ticket
    expires_at: float


class DrainRate:
    """Completions per second over a sliding window, for Retry-After estimates."""

    def __init__(self, window_s: float = 30.0) -> None:
        self._window_s = window_s
        self._ends: deque[float] = deque()

    def record(self, now: float) -> None:
        self._ends.append(now)
        self._trim(now)

    def per_second(self, now: float) -> float:
        self._trim(now)
        return len(self._ends) / self._window_s

    def _trim(self, now: float) -> None:
        while self._ends and self._ends[0] < now - self._window_s:
            self._ends.popleft()


def retry_after(waiting: int, drain_per_s: float) -> int:
    """Whole seconds until `waiting` requests ahead would have drained (1..60)."""
    if drain_per_s <= 0:
        return 5
    return max(1, min(60, math.ceil((waiting + 1) / drain_per_s)))


class AdmissionController:
    """A Serve deployment with one replica; routers call `admit` and `release`."""

    def __init__(self, config: AdmissionConfig) -> None:
        self._config = config
        self._leases: dict[str, _Lease] = {}
        self._waiters: deque[tuple[Ticket, asyncio.Future[Decision]]] = deque()
        self._drain = DrainRate()
        self._sweeper: asyncio.Task[None] | None = None

    async def admit(self, ticket: Ticket) -> Decision:
        self._ensure_sweeper()
        if len(self._leases) < self._config.max_in_flight and not self._waiters:
            return self._grant(ticket)
        if len(self._waiters) >= self._config.max_queued:
            return self._refuse(Outcome.QUEUE_FULL, "the server is at capacity and its queue is full")
        return await self._wait(ticket)

    def release_many(self, lease_ids: list[str]) -> int:
        """Release several leases in one call (routers batch their releases)."""
        return sum(self.release(lease_id) for lease_id in lease_ids)

    def release(self, lease_id: str) -> bool:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return False
        self._drain.record(time.monotonic())
        self._wake_waiters()
        return True

    def snapshot(self) -> dict[str, int]:
        return {"in_flight": len(self._leases), "queued": len(self._waiters)}

    async def _wait(self, ticket: Ticket) -> Decision:
        waiter: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        entry = (ticket, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self._config.queue_timeout_s):
                return await asyncio.shield(waiter)
        except TimeoutError:
            if waiter.done():  # granted in the same instant the timeout fired
                return waiter.result()
            self._waiters.remove(entry)
            return self._refuse(Outcome.QUEUE_TIMEOUT, "no capacity freed up within the queue timeout")
        except asyncio.CancelledError:  # the router gave up: hand back what it was granted
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif waiter.done() and waiter.result().lease_id:
                self.release(waiter.result().lease_id)
            raise

    def _wake_waiters(self) -> None:
        while len(self._leases) < self._config.max_in_flight and self._waiters:
            ticket, waiter = self._waiters.popleft()
            waiter.set_result(self._grant(ticket))

    def _grant(self, ticket: Ticket) -> Decision:
        lease_id = uuid.uuid4().hex
        self._leases[lease_id] = _Lease(ticket, time.monotonic() + self._config.lease_ttl_s)
        return Decision(Outcome.ADMITTED, lease_id=lease_id)

    def _refuse(self, outcome: Outcome, message: str) -> Decision:
        seconds = retry_after(len(self._waiters), self._drain.per_second(time.monotonic()))
        return Decision(outcome, retry_after_s=seconds, message=message)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self._config.lease_ttl_s / 4))
            self.expire(time.monotonic())

    def expire(self, now: float) -> int:
        """Drop leases past their TTL (their holder died); returns how many."""
        expired = [lease_id for lease_id, lease in self._leases.items() if lease.expires_at <= now]
        for lease_id in expired:
            del self._leases[lease_id]
        if expired:
            self._wake_waiters()
        return len(expired)
