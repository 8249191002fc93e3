"""The controller's end of the admission link: routers' admits and releases over TCP.

A Serve handle call costs ~1.5 ms of latency and about as much CPU on each side,
nearly all of it Serve's per-call machinery, where deciding takes ~30 us. So each
router keeps one TCP connection to the controller replica and sends admits as
frames; every admit gets its Decision back under the router's call id, and the
replies of one event-loop turn leave in one write. A router proves it may connect
with the token the controller hands out through its Serve handle.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import secrets
from collections.abc import Iterable
from typing import Any, Protocol

from serve_app.channel.frames import ADMIT, CANCEL, DECISION, RELEASE, FrameReader, is_hello
from serve_app.channel.outbox import Outbox
from serve_app.outcomes import Decision, Ticket
from serve_app.protocol import ReplyAddress

logger = logging.getLogger("ray.serve")


class Admitter(Protocol):
    async def admit(self, ticket: Ticket) -> Decision: ...

    def release_each(self, releases: Iterable[Any]) -> int: ...


class _RouterConnection(Outbox):
    def __init__(self, admitter: Admitter, token: str) -> None:
        super().__init__()
        self._admitter = admitter
        self._token = token
        self._reader = FrameReader()
        self._trusted = False
        self._calls: dict[bytes, asyncio.Task[None]] = {}

    def data_received(self, data: bytes) -> None:
        for kind, call_id, payload in self._reader.feed(data):
            if not self._trusted:
                self._trusted = is_hello(kind, payload, self._token)
                if not self._trusted:
                    logger.warning("admission link: refused a connection without the right token")
                    self.close()
                    return
            elif kind == ADMIT:
                self._calls[call_id] = asyncio.ensure_future(self._admit(call_id, pickle.loads(payload)))
            elif kind == CANCEL:
                call = self._calls.pop(call_id, None)
                if call is not None:
                    call.cancel()  # the controller hands back whatever it granted the call
            elif kind == RELEASE:
                self._admitter.release_each(pickle.loads(payload))

    async def _admit(self, call_id: bytes, ticket: Ticket) -> None:
        try:
            answer: Decision | Exception = await self._admitter.admit(ticket)
        except Exception as error:  # the router treats it as an unreachable controller
            answer = RuntimeError(f"admit failed in the controller: {error!r}")
        finally:
            self._calls.pop(call_id, None)
        if not self.broken:
            self.send(DECISION, call_id, pickle.dumps(answer))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for call in self._calls.values():
            call.cancel()  # the router failed these calls when it lost the connection
        self._calls.clear()


class AdmissionServer:
    """Listens for routers; one per controller replica."""

    def __init__(self, admitter: Admitter) -> None:
        self._admitter = admitter
        self._token = secrets.token_hex(16)
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str) -> ReplyAddress:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _RouterConnection(self._admitter, self._token), host, 0)
        return ReplyAddress(host, self._server.sockets[0].getsockname()[1], self._token)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
