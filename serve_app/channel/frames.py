"""Wire format of the channels: `kind | id length | payload length | id | payload`."""

from __future__ import annotations

import hmac
import struct
from collections.abc import Iterator

from serve_app.outcomes import Usage

HEADER = struct.Struct(">BHI")
USAGE = struct.Struct(">II")  # an END frame's payload: prompt and completion tokens

HELLO = 0  # first frame on a connection: id empty, payload = the router's token
DATA = 1   # payload = SSE bytes for the request
END = 2    # the request's stream is complete; payload = its usage, if counted (USAGE)
# The admission link (router <-> controller); payloads are pickled outcomes.py objects.
ADMIT = 3     # id = the router's call id, payload = a Ticket
DECISION = 4  # id = the call id, payload = a Decision (or the exception admit raised)
CANCEL = 5    # the router gave up waiting for the call
RELEASE = 6   # id empty, payload = a batch of releases


def is_hello(kind: int, payload: bytes, token: str) -> bool:
    """Whether a connection's first frame proves it was sent by the token's owner."""
    return kind == HELLO and hmac.compare_digest(payload, token.encode())


def usage_payload(usage: Usage | None) -> bytes:
    return USAGE.pack(usage.prompt_tokens, usage.completion_tokens) if usage is not None else b""


def usage_from(payload: bytes) -> Usage | None:
    return Usage(*USAGE.unpack(payload)) if len(payload) == USAGE.size else None


def encode(kind: int, request_id: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(request_id), len(payload)) + request_id + payload


class FrameReader:
    """Incremental decoder: feed bytes as they arrive, get whole frames out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
        self._buffer += data
        buffer, offset, size = self._buffer, 0, len(self._buffer)
        while size - offset >= HEADER.size:
            kind, id_len, payload_len = HEADER.unpack_from(buffer, offset)
            end = offset + HEADER.size + id_len + payload_len
            if end > size:
                break
            start = offset + HEADER.size
            yield kind, bytes(buffer[start:start + id_len]), bytes(buffer[start + id_len:end])
            offset = end
        del buffer[:offset]
