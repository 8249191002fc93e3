"""Usage is read once, from the end of a reply."""

from __future__ import annotations

import json

from serve_app.outcomes import Usage
from serve_app.usage import usage_in

USAGE = {"prompt_tokens": 12, "total_tokens": 20, "completion_tokens": 8}


def test_usage_of_a_non_streamed_reply():
    body = json.dumps({"id": "x", "choices": [{"message": {"content": '"usage": no'}}], "usage": USAGE})
    assert usage_in(body.encode()) == Usage(12, 8)


def test_usage_from_the_final_events_of_a_stream():
    tail = (b'data: {"id":"x","choices":[],"usage":' + json.dumps(USAGE).encode() + b"}\n\n"
            b"data: [DONE]\n\n")
    assert usage_in(tail) == Usage(12, 8)


def test_no_usage_without_a_usage_object():
    assert usage_in(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\ndata: [DONE]\n\n') is None
    assert usage_in(b'{"usage": null}') is None
    assert usage_in(b'{"usage": {"prompt_tokens": 1}}') is None
    assert usage_in(b'{"usage": {"prompt_to') is None
    assert usage_in(b"") is None
