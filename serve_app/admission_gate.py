"""The router's side of admission: ask the controller, never hang on it.

When the controller cannot be reached (dead, restarting, overloaded) the router
falls back to a conservative local limit instead of failing or waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from serve_app.admission import Decision, Outcome, Ticket
from serve_app.config import AdmissionConfig

logger = logging.getLogger("ray.serve")

LOCAL_PREFIX = "local-"
RELEASE_BATCH_S = 0.02  # releases within this window share one controller call


class LocalLimit:
    """A per-router cap used only while the controller is unreachable."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: set[str] = set()

    def admit(self) -> Decision:
        if len(self._held) >= self._limit:
            return Decision(Outcome.UNAVAILABLE, retry_after_s=2,
                            message="admission is degraded and this router is at its local limit")
        lease_id = LOCAL_PREFIX + uuid.uuid4().hex
        self._held.add(lease_id)
        return Decision(Outcome.ADMITTED, lease_id=lease_id)

    def release(self, lease_id: str) -> None:
        self._held.discard(lease_id)


class AdmissionGate:
    def __init__(self, controller, config: AdmissionConfig) -> None:
        self._controller = controller
        self._timeout_s = config.queue_timeout_s + 2.0
        self._local = LocalLimit(config.fallback_max_in_flight)
        self._to_release: list[str] = []
        self._in_flight_calls: set[asyncio.Future] = set()

    async def admit(self, ticket: Ticket) -> Decision:
        try:
            return await asyncio.wait_for(self._controller.admit.remote(ticket), self._timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # unreachable controller: degrade, never hang
            logger.warning("admission controller unreachable (%r); using the local limit", error)
            return self._local.admit()

    def release(self, lease_id: str | None) -> None:
        if not lease_id:
            return
        if lease_id.startswith(LOCAL_PREFIX):
            self._local.release(lease_id)
            return
        if not self._to_release:
            asyncio.get_running_loop().call_later(RELEASE_BATCH_S, self._flush_releases)
        self._to_release.append(lease_id)

    def _flush_releases(self) -> None:
        batch, self._to_release = self._to_release, []
        future = asyncio.ensure_future(_quietly(self._controller.release_many.remote(batch)))
        self._in_flight_calls.add(future)
        future.add_done_callback(self._in_flight_calls.discard)


async def _quietly(response) -> None:
    try:
        await response
    except Exception as error:  # the lease expires by its TTL anyway
        logger.warning("could not release a lease: %r", error)
