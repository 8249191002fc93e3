"""Async load generator for OpenAI-compatible chat-completions endpoints.

One shared aiohttp session sends every request; each request records its own
timings and, when it fails, the HTTP status, error body and Retry-After header,
so refusals (429, 503) are counted rather than hidden. aiohttp rather than httpx:
its HTTP parser is C, httpx's is Python, and the load generator shares the
machine's cores with the servers it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.arrivals import ClosedLoop, LoadPoint, OpenLoop
from bench.sse import data_of, parse_chunk
from bench.workload import RequestSpec

ERROR_BODY_CHARS = 500
DRAIN_S = 1.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send: base URL (with or without /v1), key, extra headers, timeout."""

    base_url: str
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 300.0

    def url(self, path: str) -> str:
        base = self.base_url.rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        return f"{base}/v1/{path.lstrip('/')}"

    def all_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass
class RequestResult:
    """What one request did. Times are seconds; `start_s` is relative to the run's start."""

    stream: bool
    start_s: float = 0.0
    status: int = 0
    """HTTP status; 0 when no response arrived (timeout, connection error)."""
    e2e_s: float | None = None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    input_tokens: int | None = None
    failure: str | None = None
    """None on success; else the HTTP status as text, "timeout", "connection", "stream-error"
    or "bad-response"."""
    error: str | None = None
    retry_after: str | None = None
    router_s: float | None = None
    """A refusal's time in the router, as its `Server-Timing` header says (our app's only)."""

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class LoadRun:
    results: list[RequestResult]
    wall_s: float
    started_at: float = 0.0
    """`time.perf_counter()` when the run began: results' `start_s` count from it."""


def make_client(endpoint: Endpoint, max_connections: int = 4096) -> aiohttp.ClientSession:
    """The one session a run shares: connection limits well above any load point.
    Each request's own deadline is `send`'s; the session only bounds connecting."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(endpoint.timeout_s, 30.0))
    return aiohttp.ClientSession(connector=connector, timeout=timeout, headers=endpoint.all_headers())


async def send(client: aiohttp.ClientSession, endpoint: Endpoint, body: dict[str, Any]) -> RequestResult:
    """Send one chat completion; never raises and never outlives `endpoint.timeout_s`."""
    result = RequestResult(stream=bool(body.get("stream")))
    started = time.perf_counter()
    try:
        async with asyncio.timeout(endpoint.timeout_s):
            async with client.post(endpoint.url("chat/completions"), json=body) as response:
                result.status = response.status
                if response.status != 200:
                    _record_refusal(result, response, await response.text(errors="replace"))
                elif result.stream:
                    await _read_events(response, result, started)
                else:
                    _record_usage(result, _answer(await response.read()).get("usage"))
    except TimeoutError as error:
        result.failure = "timeout"
        result.error = str(error) or f"no complete answer within {endpoint.timeout_s:g} s"
    except (aiohttp.ClientError, OSError) as error:
        result.failure, result.error = "connection", f"{type(error).__name__}: {error}"
    except ValueError as error:  # a 200 whose body is not the JSON it should be
        result.failure, result.error = "bad-response", f"{type(error).__name__}: {error}"
    if result.e2e_s is None:
        result.e2e_s = time.perf_counter() - started
    return result


def _answer(raw: bytes) -> dict[str, Any]:
    answer = json.loads(raw)
    if not isinstance(answer, dict):
        raise ValueError(f"the answer is not a JSON object: {raw[:200]!r}")
    return answer


async def _read_events(response: aiohttp.ClientResponse, result: RequestResult, started: float) -> None:
    output_chunks = 0
    last = started
    usage = None
    async for raw in response.content:
        payload = data_of(raw.decode().rstrip("\r\n"))
        if payload is None:
            continue
        chunk = parse_chunk(payload)
        now = time.perf_counter()
        if chunk.error is not None:
            result.failure, result.error = "stream-error", chunk.error
            return
        if chunk.done:
            result.e2e_s = now - started
            await _drain(response.content)
            break
        if chunk.output:
            if result.ttft_s is None:
                result.ttft_s = now - started
            else:
                result.itl_s.append(now - last)
            last = now
            output_chunks += 1
        usage = chunk.usage or usage
    # Servers that batch tokens into chunks make chunk counts an undercount; usage is exact.
    result.output_tokens = output_chunks
    _record_usage(result, usage)


async def _drain(lines: AsyncIterator[bytes]) -> None:
    """Read past [DONE] to the end of the response, so the connection goes back to the
    pool instead of being dropped (which servers log as a client disconnect)."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(DRAIN_S):
            async for _ in lines:
                pass


def _record_usage(result: RequestResult, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    if usage.get("completion_tokens") is not None:
        result.output_tokens = int(usage["completion_tokens"])
    if usage.get("prompt_tokens") is not None:
        result.input_tokens = int(usage["prompt_tokens"])


def _record_refusal(result: RequestResult, response: aiohttp.ClientResponse, text: str) -> None:
    result.failure = str(response.status)
    result.error = text[:ERROR_BODY_CHARS]
    result.retry_after = response.headers.get("retry-after")
    result.router_s = timed_metric(response.headers.get("server-timing"), "router")


def timed_metric(header: str | None, name: str) -> float | None:
    """Seconds of the metric `name` in a Server-Timing header (`name;dur=<ms>, ...`)."""
    for metric in (header or "").split(","):
        label, *params = (part.strip() for part in metric.split(";"))
        durations = [param.removeprefix("dur=") for param in params if param.startswith("dur=")]
        if label == name and durations:
            with contextlib.suppress(ValueError):
                return float(durations[0]) / 1000
    return None


async def run_load(client: aiohttp.ClientSession, endpoint: Endpoint, specs: Sequence[RequestSpec],
                   load: LoadPoint, on_done: Callable[[RequestResult], None] | None = None) -> LoadRun:
    """Send every request of `specs` in the pattern `load` describes; results keep spec order."""
    results: list[RequestResult | None] = [None] * len(specs)
    run_start = time.perf_counter()

    async def one(index: int) -> None:
        sent = time.perf_counter()
        result = await send(client, endpoint, specs[index].body)
        result.start_s = sent - run_start
        results[index] = result
        if on_done:
            on_done(result)

    if isinstance(load, ClosedLoop):
        await _closed_loop(one, len(specs), load.concurrency)
    else:
        await _open_loop(one, load, len(specs), run_start)
    wall = time.perf_counter() - run_start
    return LoadRun([r for r in results if r is not None], wall, run_start)


async def _closed_loop(one: Callable[[int], Any], count: int, concurrency: int) -> None:
    pending = iter(range(count))

    async def worker() -> None:
        for index in pending:
            await one(index)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))


async def _open_loop(one: Callable[[int], Any], load: OpenLoop, count: int, run_start: float) -> None:
    tasks = []
    for index, offset in enumerate(load.offsets(count)):
        delay = run_start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
