"""Carry one reply from an LLMServer replica to the router, surviving replica loss.

A request that has not produced its first chunk when its replica dies is sent
again, once, to another replica. A stream that loses its replica later ends with
an OpenAI-shaped SSE error event and `data: [DONE]`: never a hang, never a
silent truncation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError

from serve_app.errors import error_body
from serve_app.protocol import EngineRequest, ReplyHead

logger = logging.getLogger("ray.serve")

DONE = b"data: [DONE]\n\n"


class ReplicaUnavailable(RuntimeError):
    """No replica could serve the request."""


@dataclass
class OpenedReply:
    head: ReplyHead
    first: bytes
    rest: AsyncIterator[bytes]


def sse_error(message: str, status: int = 503) -> bytes:
    payload = json.dumps(error_body(message, status), separators=(",", ":"))
    return f"data: {payload}\n\n".encode() + DONE


async def open_reply(handle, request: EngineRequest, retries: int = 1) -> OpenedReply:
    """Send the request and wait for its head and first chunk (retrying on replica loss)."""
    for attempt in range(retries + 1):
        stream = handle.options(stream=True).generate.remote(request)
        try:
            head = await stream.__anext__()
            first = await anext(stream, b"")
            return OpenedReply(head, first, _rest(stream, head.stream))
        except (RayError, BackPressureError) as error:
            stream.cancel()
            logger.warning("request %s lost its replica before output (attempt %d): %r",
                           request.request_id, attempt + 1, error)
    raise ReplicaUnavailable("no model replica could serve the request; retry later")


async def _rest(stream, is_sse: bool) -> AsyncIterator[bytes]:
    finished = False
    try:
        async for chunk in stream:
            yield chunk
        finished = True
    except (RayError, BackPressureError) as error:
        logger.warning("stream lost its replica mid-way: %r", error)
        if is_sse:
            yield sse_error("the model replica serving this stream failed; the response is incomplete")
        else:
            raise ReplicaUnavailable("the model replica failed while answering") from error
    finally:
        if not finished:  # client gone or replica lost: abort the engine request
            stream.cancel()
