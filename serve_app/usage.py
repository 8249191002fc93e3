"""What a finished request used, read from the end of its reply.

Read once per request from the last bytes only (the non-streamed body, or the
final SSE events where `stream_options.include_usage` puts the usage chunk), so
the streaming path does no per-token work for it.
"""

from __future__ import annotations

import json

from serve_app.outcomes import Usage

USAGE_KEY = b'"usage":'


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
