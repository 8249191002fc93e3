"""The router's end of the token channel: a TCP server feeding per-request inboxes."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque

from serve_app.channel.frames import DATA, END, FrameReader, is_hello, usage_from
from serve_app.outcomes import Usage
from serve_app.protocol import ReplyAddress

logger = logging.getLogger("ray.serve")


class Inbox:
    """One request's chunks, in order; `None` marks the end.

    A reader that has fallen behind gets every chunk waiting for it in one piece: a
    saturated router then pays one response write per request per turn, not one per
    token, and catches up. A reader that keeps up gets each chunk as it comes."""

    def __init__(self) -> None:
        self._items: deque[bytes | BaseException | None] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.usage: Usage | None = None
        """What the request used, as the replica reported it with the end."""

    def put(self, item: bytes | BaseException | None) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> bytes | None:
        """The chunks waiting (at least one, joined), else the end (None) or the error."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if not isinstance(self._items[0], bytes):
            item = self._items.popleft()
            if isinstance(item, BaseException):
                raise item
            return None
        chunks = []
        while self._items and isinstance(self._items[0], bytes):
            chunks.append(self._items.popleft())
        return b"".join(chunks)  # a lone chunk comes back as it is, not copied


class _Connection(asyncio.Protocol):
    def __init__(self, server: InboxServer) -> None:
        self._server = server
        self._reader = FrameReader()
        self._trusted = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        inboxes = self._server.inboxes
        for kind, request_id, payload in self._reader.feed(data):
            if not self._trusted:
                if not is_hello(kind, payload, self._server.token):
                    logger.warning("token channel: refused a connection without the right token")
                    self._transport.close()
                    return
                self._trusted = True
                continue
            inbox = inboxes.get(request_id)
            if inbox is None:
                continue  # the request is gone (client left); drop its chunks
            if kind == DATA:
                inbox.put(payload)
            elif kind == END:
                inbox.usage = usage_from(payload)
                inbox.put(None)


class InboxServer:
    """Listens for replicas; created once per router replica."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self.inboxes: dict[bytes, Inbox] = {}
        self._server: asyncio.base_events.Server | None = None
        self.address: ReplyAddress | None = None

    async def start(self, host: str, advertise_host: str | None = None) -> ReplyAddress:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = ReplyAddress(advertise_host or host, port, self.token)
        return self.address

    def open(self, request_id: str) -> Inbox:
        inbox = Inbox()
        self.inboxes[request_id.encode()] = inbox
        return inbox

    def close(self, request_id: str) -> None:
        self.inboxes.pop(request_id.encode(), None)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
