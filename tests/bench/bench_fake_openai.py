"""A tiny OpenAI-compatible chat server for the benchmark's tests.

The model name picks the behaviour:
  "tiny"        streams `max_tokens` tokens, TOKEN_DELAY_S apart, then a usage chunk
  "no-usage"    the same without the usage chunk
  "overloaded"  503 with Retry-After: 7
  "limited"     429 with Retry-After: 1
  "slow"        never answers within a test's timeout
  "broken"      a stream that ends in an error event
  "garbage"     200 with a body that is not JSON
  "lingers"     streams like "tiny" but keeps the response open long after [DONE]

Run in a thread with `serve_in_thread()`, or as a process:
    python bench_fake_openai.py --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOKEN_DELAY_S = 0.02
FIRST_TOKEN_DELAY_S = 0.05
PROMPT_TOKENS = 11


def _chunk(delta: dict, finish: str | None = None) -> str:
    event = {"object": "chat.completion.chunk",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(event)}\n\n"


async def _tokens(count: int, usage: bool, linger_s: float = 0.0):
    yield _chunk({"role": "assistant", "content": ""})
    await asyncio.sleep(FIRST_TOKEN_DELAY_S)
    for index in range(count):
        if index:
            await asyncio.sleep(TOKEN_DELAY_S)
        # Every third token's text is held back, as vLLM does with partial UTF-8.
        text = "" if index % 3 == 2 else f" w{index}"
        yield _chunk({"content": text}, "length" if index == count - 1 else None)
    if usage:
        totals = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count,
                  "total_tokens": PROMPT_TOKENS + count}
        yield f"data: {json.dumps({'choices': [], 'usage': totals})}\n\n"
    yield "data: [DONE]\n\n"
    await asyncio.sleep(linger_s)


async def _broken():
    yield _chunk({"role": "assistant", "content": ""})
    yield _chunk({"content": " w0"})
    yield f"data: {json.dumps({'error': {'message': 'engine died', 'code': 500}})}\n\n"


def _refusal(status: int, retry_after: str) -> Response:
    body = {"error": {"message": "try later", "code": status}}
    return JSONResponse(body, status_code=status, headers={"Retry-After": retry_after})


async def chat(request: Request) -> Response:
    body = await request.json()
    model, count = body["model"], int(body.get("max_tokens", 4))
    if model == "overloaded":
        return _refusal(503, "7")
    if model == "limited":
        return _refusal(429, "1")
    if model == "slow":
        await asyncio.sleep(60)
    if model == "garbage":
        return Response("<html>proxy error</html>", media_type="text/html")
    if model == "broken":
        return StreamingResponse(_broken(), media_type="text/event-stream")
    if body.get("stream"):
        usage = model != "no-usage" and (body.get("stream_options") or {}).get("include_usage")
        linger_s = 30.0 if model == "lingers" else 0.0
        return StreamingResponse(_tokens(count, bool(usage), linger_s),
                                 media_type="text/event-stream")
    await asyncio.sleep(FIRST_TOKEN_DELAY_S + TOKEN_DELAY_S * (count - 1))
    return JSONResponse({
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "w " * count},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count,
                  "total_tokens": PROMPT_TOKENS + count},
    })


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": "tiny", "object": "model"}]})


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                        Route("/v1/models", models)])


@contextmanager
def serve_in_thread() -> Iterator[str]:
    """Serve on a free loopback port in a daemon thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
