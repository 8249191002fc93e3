"""The token channel over a real loopback socket."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.channel.inbox import Inbox, InboxServer
from serve_app.channel.outbox import Outboxes
from serve_app.outcomes import Usage
from serve_app.protocol import ReplyAddress


@pytest.fixture
async def server():
    inboxes = InboxServer()
    await inboxes.start("127.0.0.1")
    yield inboxes
    await inboxes.stop()


async def test_chunks_arrive_in_order_and_end(server):
    inbox = server.open("req-1")
    outbox = await Outboxes().get(server.address)
    for index in range(5):
        outbox.data(b"req-1", f"chunk {index}".encode())
    outbox.end(b"req-1")
    received = []
    while (chunk := await asyncio.wait_for(inbox.get(), 2)) is not None:
        received.append(chunk)
    assert b"".join(received) == b"".join(f"chunk {index}".encode() for index in range(5))


async def test_the_end_of_a_stream_brings_the_usage_the_replica_counted(server):
    counted, uncounted = server.open("counted"), server.open("uncounted")
    outbox = await Outboxes().get(server.address)
    outbox.data(b"counted", b"data: [DONE]\n\n")
    outbox.end(b"counted", Usage(1234, 56))
    outbox.end(b"uncounted")
    assert await asyncio.wait_for(counted.get(), 2) == b"data: [DONE]\n\n"
    assert await asyncio.wait_for(counted.get(), 2) is None
    assert counted.usage == Usage(1234, 56)
    assert await asyncio.wait_for(uncounted.get(), 2) is None and uncounted.usage is None


async def test_streams_of_many_requests_share_one_connection_and_stay_apart(server):
    inboxes = {f"r{index}": server.open(f"r{index}") for index in range(20)}
    outboxes = Outboxes()
    outbox = await outboxes.get(server.address)
    assert await outboxes.get(server.address) is outbox
    for step in range(3):
        for name in inboxes:
            outbox.data(name.encode(), f"{name}:{step}".encode())
    for name in inboxes:
        outbox.end(name.encode())
    for name, inbox in inboxes.items():
        got = [await asyncio.wait_for(inbox.get(), 2) for _ in range(2)]
        assert got == [b"".join(f"{name}:{step}".encode() for step in range(3)), None]


async def test_a_reader_that_keeps_up_gets_each_chunk_as_it_comes():
    inbox = Inbox()
    for index in range(3):
        reading = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        inbox.put(f"token {index}".encode())
        assert await asyncio.wait_for(reading, 1) == f"token {index}".encode()


async def test_a_reader_behind_gets_the_waiting_chunks_in_one_piece_then_the_end():
    inbox = Inbox()
    for index in range(3):
        inbox.put(f"token {index};".encode())
    inbox.put(None)
    assert await inbox.get() == b"token 0;token 1;token 2;"
    assert await inbox.get() is None


async def test_chunks_before_an_error_are_delivered_before_it_is_raised():
    inbox = Inbox()
    inbox.put(b"token 0;")
    inbox.put(b"token 1;")
    inbox.put(ConnectionError("replica lost"))
    assert await inbox.get() == b"token 0;token 1;"
    with pytest.raises(ConnectionError):
        await inbox.get()


async def test_frames_queued_in_one_loop_turn_leave_in_one_write(server, monkeypatch):
    outbox = await Outboxes().get(server.address)
    writes = []
    real_write = outbox._transport.write
    monkeypatch.setattr(outbox._transport, "write", lambda data: (writes.append(data), real_write(data)))
    for index in range(64):
        outbox.data(f"r{index}".encode(), b"data: token\n\n")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(writes) == 1


async def test_a_connection_without_the_router_token_is_dropped(server):
    inbox = server.open("req-1")
    impostor = ReplyAddress(server.address.host, server.address.port, "not-the-token")
    outbox = await Outboxes().get(impostor)
    outbox.data(b"req-1", b"injected")
    await asyncio.sleep(0.2)
    assert outbox.broken
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(inbox.get(), 0.2)


async def test_chunks_for_a_closed_request_are_dropped(server):
    server.open("gone")
    server.close("gone")
    outbox = await Outboxes().get(server.address)
    outbox.data(b"gone", b"late")
    live = server.open("live")
    outbox.data(b"live", b"ok")
    assert await asyncio.wait_for(live.get(), 2) == b"ok"
