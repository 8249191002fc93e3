"""Carry one reply from an LLMServer replica to the router, surviving replica loss.

The request goes through Serve's DeploymentHandle (routing, autoscaling,
back-pressure, cancellation). A streamed body comes back over the router's token
channel when the replica accepted it (`head.via_channel`), else over the handle.

A request that has not produced its first chunk when its replica dies is sent
again, once, to another replica. A stream that loses its replica later ends with
an OpenAI-shaped SSE error event and `data: [DONE]`: never a hang, never a
silent truncation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError

from serve_app.channel.inbox import Inbox, InboxServer
from serve_app.errors import error_body
from serve_app.outcomes import Usage
from serve_app.protocol import EngineRequest, ReplyHead

logger = logging.getLogger("ray.serve")

DONE = b"data: [DONE]\n\n"
LOST_MESSAGE = "the model replica serving this stream failed; the response is incomplete"
END_GRACE_S = 10.0  # after the replica finished, how long its END frame may take to arrive


class ReplicaUnavailable(RuntimeError):
    """No replica could serve the request."""


class ReplicaLost(RuntimeError):
    """The replica serving a request died or became unreachable."""


REPLICA_ERRORS = (RayError, BackPressureError, ReplicaLost)


@dataclass
class OpenedReply:
    head: ReplyHead
    first: bytes
    rest: AsyncIterator[bytes] = None  # type: ignore[assignment]  # set once opened
    usage: Usage | None = None
    """A stream's usage as the replica counted it, once `rest` has ended."""


def sse_error(message: str, status: int = 503) -> bytes:
    payload = json.dumps(error_body(message, status), separators=(",", ":"))
    return f"data: {payload}\n\n".encode() + DONE


async def open_reply(handle, request: EngineRequest, inboxes: InboxServer | None = None,
                     retries: int = 1) -> OpenedReply:
    """Send the request and wait for its head and first chunk (retrying on replica loss)."""
    for attempt in range(retries + 1):
        inbox = inboxes.open(request.request_id) if inboxes and request.reply_to else None
        stream = handle.options(stream=True).generate.remote(request)
        watcher = None
        try:
            head = await stream.__anext__()
            if head.via_channel:
                watcher = asyncio.ensure_future(_watch(stream, inbox))
                opened = OpenedReply(head, await inbox.get() or b"")
                opened.rest = _channel_rest(inbox, watcher, stream, inboxes, request, opened)
                return opened
            opened = OpenedReply(head, await anext(stream, b""))
            if inbox is not None:
                inboxes.close(request.request_id)
            opened.rest = _handle_rest(stream, opened)
            return opened
        except REPLICA_ERRORS as error:
            stream.cancel()
            if watcher is not None:
                watcher.cancel()
            if inbox is not None:
                inboxes.close(request.request_id)
            logger.warning("request %s lost its replica before output (attempt %d): %r",
                           request.request_id, attempt + 1, error)
    raise ReplicaUnavailable("no model replica could serve the request; retry later")


async def _watch(stream, inbox: Inbox) -> None:
    """Turn the handle stream's failure (the replica died) into an error in the inbox."""
    try:
        async for _ in stream:
            pass
        await asyncio.sleep(END_GRACE_S)
        inbox.put(ReplicaLost("the replica finished without completing the stream"))
    except REPLICA_ERRORS as error:
        inbox.put(ReplicaLost(repr(error)))


async def _channel_rest(inbox: Inbox, watcher: asyncio.Future, stream, inboxes: InboxServer,
                        request: EngineRequest, opened: OpenedReply) -> AsyncIterator[bytes]:
    finished = False
    try:
        while (chunk := await inbox.get()) is not None:
            yield chunk
        finished = True
        opened.usage = inbox.usage
    except ReplicaLost as error:
        logger.warning("stream %s lost its replica mid-way: %s", request.request_id, error)
        yield sse_error(LOST_MESSAGE)
    finally:
        watcher.cancel()
        inboxes.close(request.request_id)
        if not finished:  # client gone or replica lost: abort the engine request
            stream.cancel()


async def _handle_rest(stream, opened: OpenedReply) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for chunk in stream:
            if isinstance(chunk, Usage):
                opened.usage = chunk
            else:
                yield chunk
        finished = True
    except REPLICA_ERRORS as error:
        logger.warning("stream lost its replica mid-way: %r", error)
        if opened.head.stream:
            yield sse_error(LOST_MESSAGE)
        else:
            raise ReplicaUnavailable("the model replica failed while answering") from error
    finally:
        if not finished:
            stream.cancel()
