"""The router's end of the admission link: one connection to the controller replica.

Admits are matched to their decisions by call id. When the connection closes
(the controller died or restarted) every call on it fails at once, so the router
applies its unreachable policy instead of waiting. Until the link is open again
(its address comes from the controller's Serve handle) the router asks through
the handle, each call with its own timeout: the handle is the fallback path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
from typing import Any

from serve_app.channel.frames import ADMIT, CANCEL, DECISION, HELLO, RELEASE, FrameReader
from serve_app.channel.outbox import ChannelBroken, Outbox
from serve_app.outcomes import Decision, Ticket

logger = logging.getLogger("ray.serve")


class AdmissionLink(Outbox):
    def __init__(self) -> None:
        super().__init__()
        self._reader = FrameReader()
        self._calls: dict[bytes, asyncio.Future[Decision]] = {}
        self._ids = itertools.count()

    async def admit(self, ticket: Ticket) -> Decision:
        """The controller's decision; raises ChannelBroken if the connection closes first."""
        call_id = str(next(self._ids)).encode()
        self.send(ADMIT, call_id, pickle.dumps(ticket))
        future = self._calls[call_id] = asyncio.get_running_loop().create_future()
        try:
            return await future
        except asyncio.CancelledError:
            self._abandon(call_id, future)
            raise
        finally:
            self._calls.pop(call_id, None)

    def release_many(self, releases: list[Any]) -> None:
        self.send(RELEASE, b"", pickle.dumps(releases))

    def data_received(self, data: bytes) -> None:
        for kind, call_id, payload in self._reader.feed(data):
            if kind != DECISION:
                continue
            answer = pickle.loads(payload)
            future = self._calls.pop(call_id, None)
            if future is None or future.done():
                self._orphaned(answer)
            elif isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for future in self._calls.values():
            if not future.done():
                future.set_exception(ChannelBroken("the admission controller's connection closed"))
        self._calls.clear()

    def _abandon(self, call_id: bytes, future: asyncio.Future[Decision]) -> None:
        """The caller gave up: hand back what the controller granted, or will grant, the call."""
        if self.broken:
            return  # the controller cancels the calls of a closed connection itself
        if future.done() and not future.cancelled() and future.exception() is None:
            self._orphaned(future.result())
        else:
            self.send(CANCEL, call_id)

    def _orphaned(self, answer: Decision | BaseException) -> None:
        if isinstance(answer, Decision) and answer.lease_id and not self.broken:
            self.release_many([answer.lease_id])


class ControllerLink:
    """Keeps the router's AdmissionLink open, connecting in the background to the address
    the controller gives through its Serve handle (again after the controller restarts)."""

    def __init__(self, controller: Any, timeout_s: float) -> None:
        self._controller = controller
        self._timeout_s = timeout_s
        self._link: AdmissionLink | None = None
        self._opening: asyncio.Task[AdmissionLink] | None = None

    @property
    def current(self) -> AdmissionLink | None:
        """The open link, if there is one (never waits)."""
        link = self._link
        return link if link is not None and not link.broken else None

    def open_soon(self) -> asyncio.Task[AdmissionLink]:
        """Start connecting unless connected or connecting; callers meanwhile use the handle."""
        if self._opening is None or (self._opening.done() and self.current is None):
            self._opening = asyncio.ensure_future(asyncio.wait_for(self._open(), self._timeout_s))
            self._opening.add_done_callback(_log_failure)
        return self._opening

    async def _open(self) -> AdmissionLink:
        address = await self._controller.link_address.remote()
        loop = asyncio.get_running_loop()
        _, link = await loop.create_connection(AdmissionLink, address.host, address.port)
        link.send(HELLO, b"", address.token.encode())
        self._link = link
        return link


def _log_failure(opening: asyncio.Task[AdmissionLink]) -> None:
    if not opening.cancelled() and opening.exception() is not None:
        logger.warning("cannot open the admission link (handle calls meanwhile): %r", opening.exception())
