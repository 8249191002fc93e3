"""Every response carries an `x-request-id`: the client's own if it sent a sane one.

Behind Serve's proxy the proxy already honours or mints the id and sets the
response header, so the middleware only adopts that id (for logs and the engine);
outside Serve it sets the header itself.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

_SANE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
HEADER = b"x-request-id"


def request_id_from(headers: list[tuple[bytes, bytes]], fallback: Callable[[], str] | None = None) -> str:
    for name, value in headers:
        if name.lower() == HEADER:
            text = value.decode("latin-1")
            if _SANE.match(text):
                return text
    return (fallback() if fallback else "") or uuid.uuid4().hex


def serve_request_id() -> str:
    """The id Serve's proxy gave this request (and returns in its response header)."""
    from ray.serve.context import _get_serve_request_context

    return _get_serve_request_context().request_id


class RequestIdMiddleware:
    """Pure ASGI: it touches only the response start message, never streamed chunks."""

    def __init__(self, app: Any, *, behind_serve_proxy: bool = False) -> None:
        self.app = app
        self._behind_proxy = behind_serve_proxy

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fallback = serve_request_id if self._behind_proxy else None
        request_id = request_id_from(scope.get("headers", []), fallback)
        scope.setdefault("state", {})["request_id"] = request_id
        if self._behind_proxy:
            await self.app(scope, receive, send)
            return
        encoded = request_id.encode()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, send_with_id)
