"""Every response carries an `x-request-id`: the client's own if it sent a sane one."""

from __future__ import annotations

import re
import uuid
from typing import Any

_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
HEADER = b"x-request-id"


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == HEADER:
            text = value.decode("latin-1")
            if _SANE.match(text):
                return text
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI (no per-chunk wrapping of streamed bodies beyond the start message)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, send_with_id)
