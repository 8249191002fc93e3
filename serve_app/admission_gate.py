"""The router's side of admission: ask the controller, never hang on it.

One controller call per request (`admit`), except while the controller's last
overload refusal of the same tenant line holds (`refusal_memo`); releases, with
what each request used, leave in batches. Both travel over the admission link
(one TCP connection to the controller, `channel/admission_link`) while it is
open, else (and always if `admission.direct_link` is off) as Serve handle calls.
When the controller cannot be reached (dead, restarting, stuck) the router follows
`admission.when_unreachable` (by default a conservative local limit) and decides
alone for a while before it asks again, so a dead controller costs a request at
most one timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from serve_app.admission_metrics import DecisionCounter
from serve_app.channel.admission_link import ControllerLink
from serve_app.config import AdmissionConfig
from serve_app.outcomes import Decision, Outcome, Ticket, Usage
from serve_app.refusal_memo import RefusalMemo

logger = logging.getLogger("ray.serve")

LOCAL_PREFIX = "local-"
RELEASE_BATCH_S = 0.02  # releases within this window share one controller call
METRICS_FLUSH_S = 1.0
CALL_GRACE_S = 2.0  # beyond the longest a request may wait in the controller
UNMANAGED = Decision(Outcome.ADMITTED)


class LocalLimit:
    """A per-router cap used only while the controller is unreachable. It counts every
    request this router has in flight, the controller's leases too, so deciding alone
    never adds load beyond the cap to engines that may be full already."""

    def __init__(self, limit: int, retry_after_s: float) -> None:
        self._limit = limit
        self._retry_after_s = retry_after_s
        self._held: set[str] = set()
        self.granted_elsewhere = 0
        """Leases this router holds from the controller."""

    def admit(self) -> Decision:
        if len(self._held) + self.granted_elsewhere >= self._limit:
            return Decision(Outcome.UNAVAILABLE, retry_after_s=self._retry_after_s,
                            message="admission is degraded and this router is at its local limit")
        lease_id = LOCAL_PREFIX + uuid.uuid4().hex
        self._held.add(lease_id)
        return Decision(Outcome.ADMITTED, lease_id=lease_id)

    def release(self, lease_id: str) -> None:
        self._held.discard(lease_id)

    @property
    def held(self) -> int:
        return len(self._held)


class AdmissionGate:
    def __init__(self, controller: Any, config: AdmissionConfig,
                 clock: Callable[[], float] = time.monotonic,
                 decisions: DecisionCounter | None = None) -> None:
        self._controller = controller
        self._config = config
        self._clock = clock
        self._memo = RefusalMemo(config.refusal_memo_s, clock)
        self._decisions = decisions or DecisionCounter()
        self._flush_due = False
        self._timeout_s = config.longest_wait_s + CALL_GRACE_S
        self._local = LocalLimit(config.fallback_max_in_flight, config.unreachable_retry_s)
        self._alone_until = 0.0
        self._to_release: list[tuple[str, Usage | None, float | None]] = []
        self._in_flight_calls: set[asyncio.Future] = set()
        self._link = ControllerLink(controller, self._timeout_s) if config.direct_link else None

    @property
    def local(self) -> LocalLimit:
        return self._local

    async def connect(self) -> None:
        """Open the admission link now rather than on the first admit."""
        if self._link is not None:
            with contextlib.suppress(Exception):  # logged; admits use the handle meanwhile
                await self._link.open_soon()

    async def admit(self, ticket: Ticket) -> Decision:
        if not self._config.enabled:
            return UNMANAGED
        if self._clock() < self._alone_until:
            return self._counted(ticket, self._alone())
        remembered = self._memo.recall(ticket)
        if remembered is not None:
            return self._counted(ticket, remembered)
        try:
            decision = await asyncio.wait_for(self._ask(ticket), self._timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # unreachable controller: degrade, never hang
            logger.warning("admission controller unreachable (%r); deciding alone for %g s",
                           error, self._config.unreachable_retry_s)
            self._alone_until = self._clock() + self._config.unreachable_retry_s
            return self._counted(ticket, self._alone())
        if decision.lease_id:
            self._local.granted_elsewhere += 1
        self._memo.note(ticket, decision)
        return decision

    def release(self, lease_id: str | None, usage: Usage | None = None,
                first_byte_s: float | None = None) -> None:
        """Hand capacity back, with what the request used and how long after admission
        its first bytes came (both optional)."""
        if not lease_id:
            return
        if lease_id.startswith(LOCAL_PREFIX):
            self._local.release(lease_id)
            return
        self._local.granted_elsewhere -= 1
        if not self._to_release:
            asyncio.get_running_loop().call_later(RELEASE_BATCH_S, self._flush_releases)
        self._to_release.append((lease_id, usage, first_byte_s))

    async def _ask(self, ticket: Ticket) -> Decision:
        link = self._link.current if self._link else None
        if link is not None:
            return await link.admit(ticket)
        if self._link is not None:
            self._link.open_soon()
        return await self._controller.admit.remote(ticket)

    def _counted(self, ticket: Ticket, decision: Decision) -> Decision:
        """Count a decision the controller did not make (it counts its own)."""
        self._decisions.decided(ticket.model, ticket.tenant, decision.outcome.value)
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(METRICS_FLUSH_S, self._flush_decisions)
        return decision

    def _flush_decisions(self) -> None:
        self._flush_due = False
        self._decisions.flush()

    def _alone(self) -> Decision:
        policy = self._config.when_unreachable
        if policy == "admit":
            return UNMANAGED
        if policy == "refuse":
            return Decision(Outcome.UNAVAILABLE, retry_after_s=self._config.unreachable_retry_s,
                            message="admission is unavailable; retry shortly")
        return self._local.admit()

    def _flush_releases(self) -> None:
        batch, self._to_release = self._to_release, []
        link = self._link.current if self._link else None
        if link is not None:
            link.release_many(batch)
            return
        future = asyncio.ensure_future(_quietly(self._controller.release_many.remote(batch)))
        self._in_flight_calls.add(future)
        future.add_done_callback(self._in_flight_calls.discard)


async def _quietly(response: Any) -> None:
    try:
        await response
    except Exception as error:  # the lease expires by its TTL anyway
        logger.warning("could not release leases: %r", error)
