"""What a finished request used, as the engine counted it.

A non-streamed body carries its usage; the router reads it from there. A stream is
always asked for vLLM's final usage chunk (`engine_stream_options`); the replica
takes the count from it, passes the chunk on only if the client asked for it, and
hands the count to the router with the stream's end, so the router does no
per-token work for it.
"""

from __future__ import annotations

import json
from typing import Any

from serve_app.outcomes import Usage

USAGE_KEY = b'"usage":'
FINAL_USAGE_MARK = b'"choices":[]'
"""In vLLM's trailing usage chunk only: every other chunk has a choice (a quote inside
generated text is escaped, so the mark cannot come from there)."""


def client_wants_usage(stream_options: Any) -> bool:
    return isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))


def engine_stream_options(stream_options: Any) -> dict[str, Any]:
    """The client's stream options with the final usage chunk always on; usage on every
    chunk stays as the client would get it (only with `include_usage`)."""
    asked = stream_options if isinstance(stream_options, dict) else {}
    continuous = client_wants_usage(asked) and bool(asked.get("continuous_usage_stats"))
    return {**asked, "include_usage": True, "continuous_usage_stats": continuous}


def usage_in(tail: bytes) -> Usage | None:
    """The last `"usage": {...}` object in `tail`, or None if there is none."""
    at = tail.rfind(USAGE_KEY)
    if at < 0:
        return None
    try:
        found, _ = json.JSONDecoder().raw_decode(tail[at + len(USAGE_KEY):].decode(errors="replace").lstrip())
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    prompt, completion = found.get("prompt_tokens"), found.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)
