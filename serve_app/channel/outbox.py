"""The replica's end of the token channel: one buffered connection per router."""

from __future__ import annotations

import asyncio
import logging

from serve_app.channel.frames import DATA, END, HELLO, encode, usage_payload
from serve_app.outcomes import Usage
from serve_app.protocol import ReplyAddress

logger = logging.getLogger("ray.serve")


class ChannelBroken(ConnectionError):
    """The other end went away; nothing more can be sent on this connection."""


class Outbox(asyncio.Protocol):
    """Frames queued during one event-loop turn leave in a single write."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._scheduled = False
        self._transport: asyncio.Transport | None = None
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True

    def send(self, kind: int, request_id: bytes, payload: bytes = b"") -> None:
        if self.broken:
            raise ChannelBroken("the channel is closed")
        self._pending.append(encode(kind, request_id, payload))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def data(self, request_id: bytes, payload: bytes) -> None:
        self.send(DATA, request_id, payload)

    def end(self, request_id: bytes, usage: Usage | None = None) -> None:
        self.send(END, request_id, usage_payload(usage))

    def _flush(self) -> None:
        self._scheduled = False
        if self._pending and not self.broken:
            self._transport.write(b"".join(self._pending))
        self._pending.clear()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Outboxes:
    """Connections to the routers this replica answers, opened on first use."""

    def __init__(self) -> None:
        self._outboxes: dict[ReplyAddress, Outbox] = {}
        self._connecting: dict[ReplyAddress, asyncio.Task[Outbox]] = {}

    async def get(self, address: ReplyAddress) -> Outbox:
        outbox = self._outboxes.get(address)
        if outbox is not None and not outbox.broken:
            return outbox
        task = self._connecting.get(address)
        if task is None:
            task = asyncio.ensure_future(self._connect(address))
            self._connecting[address] = task
        try:
            return await asyncio.shield(task)
        finally:
            self._connecting.pop(address, None)

    async def _connect(self, address: ReplyAddress) -> Outbox:
        loop = asyncio.get_running_loop()
        _, outbox = await loop.create_connection(Outbox, address.host, address.port)
        outbox.send(HELLO, b"", address.token.encode())
        self._outboxes[address] = outbox
        return outbox

    def close(self) -> None:
        for outbox in self._outboxes.values():
            outbox.close()
        self._outboxes.clear()
