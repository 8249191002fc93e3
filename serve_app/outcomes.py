"""What crosses the admission seam: a Ticket in, a Decision out.

A Decision carries an Outcome from a small enum; `OUTCOMES` is the one table
that maps each outcome to its HTTP status and error code, and `response_headers`
turns a decision into the headers every response carries (Retry-After on
refusals, the x-ratelimit-* family whenever the tenant has limits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

PRIORITY_HEADER = "x-priority-class"
"""A request may name a class to be served at a lower priority than its tenant's."""


class Outcome(str, Enum):
    ADMITTED = "admitted"
    REQUESTS_PER_MINUTE = "requests_per_minute_exceeded"
    TOKENS_PER_MINUTE = "tokens_per_minute_exceeded"
    CONCURRENCY = "concurrency_limit_exceeded"
    TOO_LARGE = "request_too_large"
    OVERLOADED = "overloaded"
    """It cannot start within its class's SLO: refused before it waits."""
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    """It waited and its deadline passed (the drain was slower than foreseen)."""
    UNAVAILABLE = "admission_unavailable"
    """The controller could not be reached and the router's own fallback refused."""


@dataclass(frozen=True)
class OutcomeSpec:
    status: int
    retry_after: bool


OUTCOMES: dict[Outcome, OutcomeSpec] = {
    Outcome.ADMITTED: OutcomeSpec(200, retry_after=False),
    Outcome.REQUESTS_PER_MINUTE: OutcomeSpec(429, retry_after=True),
    Outcome.TOKENS_PER_MINUTE: OutcomeSpec(429, retry_after=True),
    Outcome.CONCURRENCY: OutcomeSpec(429, retry_after=True),
    # Larger than the tenant's whole tokens-per-minute budget: retrying cannot help.
    Outcome.TOO_LARGE: OutcomeSpec(429, retry_after=False),
    Outcome.OVERLOADED: OutcomeSpec(503, retry_after=True),
    Outcome.QUEUE_FULL: OutcomeSpec(503, retry_after=True),
    Outcome.QUEUE_TIMEOUT: OutcomeSpec(503, retry_after=True),
    Outcome.UNAVAILABLE: OutcomeSpec(503, retry_after=True),
}


@dataclass(frozen=True)
class Ticket:
    """What the router asks admission for."""

    model: str
    tenant: str
    request_id: str
    prompt_tokens: int
    """The router's estimate; the controller calibrates it against the engine's counts."""
    max_tokens: int
    priority_class: str | None = None
    """Requested class (header); it can only lower the tenant's priority."""
    sequences: int = 1
    """Sequences the engine runs for it: `n` completions of each prompt. Each holds a
    sequence slot and may generate `max_tokens`."""


@dataclass(frozen=True)
class Usage:
    """What a finished request really used, as the engine counted it."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class RateLimits:
    """The tenant's x-ratelimit-* values as of the decision (None: no such limit)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float = 0.0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float = 0.0


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    lease_id: str | None = None
    retry_after_s: float | None = None
    message: str = ""
    limits: RateLimits | None = None
    alike_refused_for_s: float | None = None
    """On an overload refusal: for this long a request of the same tenant and class, no
    smaller, would be refused the same way (routers answer those from `refusal_memo`)."""
    engine_priority: int = 0
    """On admission: its place among requests waiting inside the engine, lower first."""

    @property
    def admitted(self) -> bool:
        return self.outcome is Outcome.ADMITTED

    @property
    def status(self) -> int:
        return OUTCOMES[self.outcome].status


def format_reset(seconds: float) -> str:
    """OpenAI's duration style: 20ms, 1.5s, 6m0s."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60.0:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def rate_limit_headers(limits: RateLimits | None) -> dict[str, str]:
    if limits is None:
        return {}
    headers = {}
    if limits.limit_requests is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.limit_requests)
        headers["x-ratelimit-remaining-requests"] = str(limits.remaining_requests)
        headers["x-ratelimit-reset-requests"] = format_reset(limits.reset_requests_s)
    if limits.limit_tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.limit_tokens)
        headers["x-ratelimit-remaining-tokens"] = str(limits.remaining_tokens)
        headers["x-ratelimit-reset-tokens"] = format_reset(limits.reset_tokens_s)
    return headers


def retry_after_header(seconds: float | None) -> str:
    """Whole seconds, at least 1 (clients treat 0 as "now" and hammer)."""
    return str(max(1, math.ceil(seconds or 1.0)))


def response_headers(decision: Decision) -> dict[str, str]:
    """Headers for the response to `decision`, admitted or refused."""
    headers = rate_limit_headers(decision.limits)
    if OUTCOMES[decision.outcome].retry_after:
        headers["Retry-After"] = retry_after_header(decision.retry_after_s)
    return headers
