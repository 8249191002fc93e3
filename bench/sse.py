"""Server-sent events of an OpenAI chat-completions stream, one line at a time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"


@dataclass(frozen=True)
class Chunk:
    """What one `data:` event carried."""

    content: str = ""
    output: bool = False
    """Whether the event carries generated output (possibly text still held back)."""
    usage: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False


def data_of(line: str) -> str | None:
    """The payload of a `data:` line; None for comments, other fields and blank lines."""
    if not line.startswith("data:"):
        return None
    payload = line[len("data:"):]
    # The SSE spec strips exactly one space after the colon.
    return payload[1:] if payload.startswith(" ") else payload


def parse_chunk(payload: str) -> Chunk:
    """Decode one event payload of a chat-completions stream."""
    if payload.strip() == DONE:
        return Chunk(done=True)
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        return Chunk(error=f"undecodable event: {payload[:200]}")
    if not isinstance(event, dict):
        return Chunk(error=f"unexpected event: {payload[:200]}")
    if "error" in event:
        return Chunk(error=_error_text(event["error"]))
    deltas = [choice.get("delta") or {} for choice in event.get("choices") or []]
    content = "".join(_text(delta) for delta in deltas)
    return Chunk(content=content, output=bool(content) or any(map(_held_back_token, deltas)),
                 usage=event.get("usage") or None)


# Reasoning models stream thinking tokens separately; they are output tokens too.
_TEXT_KEYS = ("content", "reasoning_content", "reasoning")


def _text(delta: dict[str, Any]) -> str:
    return "".join(delta.get(key) or "" for key in _TEXT_KEYS)


def _held_back_token(delta: dict[str, Any]) -> bool:
    # vLLM sends a token whose bytes do not yet form a character as content "";
    # the opening delta that only announces the role is not a token.
    return "role" not in delta and any(key in delta for key in _TEXT_KEYS)


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
