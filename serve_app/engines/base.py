"""The engine seam: what an LLMServer replica needs from the engine it owns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from serve_app.outcomes import Usage
from serve_app.protocol import EngineRequest, EngineStats, ReplyHead


@dataclass
class Reply:
    """An engine's answer: the head now, the body as it is produced.

    For a streamed reply the body yields SSE frames (`data: ...\\n\\n`, ending with
    `data: [DONE]\\n\\n`) and then, once the engine has counted them, one `Usage`: what
    the request used, whether or not the client asked for a usage chunk (admission
    corrects its charge with it). Otherwise the body yields one JSON document. Closing
    the body early (client gone) must abort the engine request.
    """

    head: ReplyHead
    body: AsyncIterator[bytes | Usage]


class EngineDead(RuntimeError):
    """The engine can no longer serve; the replica must be replaced."""


class Engine(Protocol):
    async def start(self) -> None:
        """Load the model and get ready to serve."""

    async def handle(self, request: EngineRequest) -> Reply:
        """Serve one OpenAI request (chat or completion)."""

    async def check_health(self) -> None:
        """Raise EngineDead if the engine cannot serve any more."""

    def stats(self) -> EngineStats:
        """Current capacity and load."""

    async def shutdown(self) -> None:
        """Stop the engine and free its resources."""
