"""Load for fault tests: how each request ended, and a one-line fault report.

A request ends one of five ways: `complete`; `error`, an explicit OpenAI-shaped
error (an HTTP error status, or an SSE error event followed by `[DONE]`);
`unshaped`, an error that is not OpenAI-shaped (never allowed); `dropped`, the
connection broke (only a dying router may do that); or `hung`, no end within the
client's timeout (never allowed). A test may also record `left`: the client itself
went away on purpose.

HTTP/1.1 lets a server close an idle keep-alive connection at any moment, and a request
sent on it just then gets no response at all. An old HAProxy process does that after a
reload, when the response it was serving on the connection ends. Clients resend such a
request on a new connection (the OpenAI SDK does, by default); a test that allows it says
so with `reconnects`, and the report counts them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

@dataclass
class Ended:
    outcome: str
    started: float
    ended: float
    detail: str = ""
    reconnects: int = 0


def chat_body(model: str, max_tokens: int, stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "stream": stream, **extra}


def is_openai_error(document: str) -> bool:
    try:
        error = json.loads(document)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}


async def request_once(client: httpx.AsyncClient, url: str, body: dict[str, Any], timeout_s: float,
                       reconnects: int = 0) -> Ended:
    """Send one chat request and say how it ended; a timeout is a hang. Up to `reconnects`
    times, a request whose connection closed before any response is sent again."""
    started, attempt = time.monotonic(), 0
    while True:
        left_s = timeout_s - (time.monotonic() - started)
        try:
            outcome, detail = await asyncio.wait_for(_exchange(client, url, body), left_s)
        except TimeoutError:
            outcome, detail = "hung", f"no end within {timeout_s}s"
        except httpx.TransportError as error:
            if _unanswered(error) and attempt < reconnects:
                attempt += 1
                continue
            outcome, detail = "dropped", f"{type(error).__name__}: {error}"
        kind = "stream" if body.get("stream") else "whole"
        return Ended(outcome, started, time.monotonic(), f"{kind} {detail}", reconnects=attempt)


def _unanswered(error: httpx.TransportError) -> bool:
    """The connection closed before a byte of the response came."""
    return isinstance(error, httpx.RemoteProtocolError) and "without sending a response" in str(error)


async def _exchange(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[str, str]:
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            document = (await response.aread()).decode(errors="replace")
            detail = f"status {response.status_code} {document[:200]!r} {dict(response.headers)}"
            return ("error" if is_openai_error(document) else "unshaped"), detail
        if not body.get("stream"):
            await response.aread()
            return "complete", ""
        events = [line.removeprefix("data: ") async for line in response.aiter_lines() if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return "dropped", "stream ended without [DONE]"
    errors = [event for event in events[:-1] if event.startswith('{"error"')]
    if errors:
        return ("error" if is_openai_error(errors[-1]) else "unshaped"), f"SSE {errors[-1][:200]}"
    return "complete", ""


def waited_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.2) -> float:
    """Poll until `condition()` holds or `timeout_s` passes; the seconds it took (the caller
    asserts the condition itself, so a timeout fails there with its own message)."""
    started = time.monotonic()
    while not condition() and time.monotonic() - started < timeout_s:
        time.sleep(poll_s)
    return time.monotonic() - started


@dataclass
class Report:
    """One fault test's numbers, printed as one line for docs/reliability.md."""

    fault: str
    ended: list[Ended] = field(default_factory=list)
    recovery_s: float | None = None
    note: str = ""

    @property
    def counts(self) -> Counter:
        return Counter(end.outcome for end in self.ended)

    @property
    def reconnects(self) -> int:
        return sum(end.reconnects for end in self.ended)

    def line(self) -> str:
        counts = self.counts
        recovery = "n/a" if self.recovery_s is None else f"{self.recovery_s:.1f}s"
        return (f"FAULT REPORT {self.fault}: sent={len(self.ended)} completed={counts['complete']} "
                f"explicit_errors={counts['error']} unshaped={counts['unshaped']} dropped={counts['dropped']} "
                f"hung={counts['hung']}" + (f" left_by_client={counts['left']}" if counts["left"] else "")
                + (f" reconnected={self.reconnects}" if self.reconnects else "")
                + f" recovery={recovery}" + (f" ({self.note})" if self.note else ""))

    def failures(self) -> list[str]:
        """What went wrong, with when each such request started and ended (s after the first started)."""
        zero = min((end.started for end in self.ended), default=0.0)
        return [f"{end.outcome} ({end.started - zero:.1f}-{end.ended - zero:.1f}s): {end.detail}"
                for end in self.ended if end.outcome != "complete"]

    def print(self) -> None:
        print("\n" + self.line(), flush=True)
