"""Small serializable objects that cross Ray handles between the deployments.

The router never ships a Starlette request to a replica: it ships an
`EngineRequest` and receives a `ReplyHead` followed by body chunks (bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["chat", "completion"]


@dataclass(frozen=True)
class ReplyAddress:
    """Where a channel listens, and the token that proves a peer was sent there: a router's
    token channel (replicas send streams' chunks) or the controller's admission link."""

    host: str
    port: int
    token: str


@dataclass(frozen=True)
class EngineRequest:
    endpoint: Endpoint
    body: dict[str, Any]
    """The validated OpenAI request body, with `max_tokens` resolved by the router."""
    request_id: str
    prompt_tokens_hint: int = 0
    """The router's estimate of prompt tokens; engines may use their own count."""
    reply_to: ReplyAddress | None = None
    """Set when the router wants streamed chunks over its token channel."""
    priority: int = 0
    """Its place in the engine's own queue, lower first (from admission; never the client's)."""


@dataclass(frozen=True)
class ReplyHead:
    """First item of every reply: the HTTP status and whether the body streams as SSE."""

    status: int
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)
    via_channel: bool = False
    """The body follows over the router's token channel, not this handle stream."""


@dataclass(frozen=True)
class EngineStats:
    """Capacity and load one replica reports (per engine)."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    """Fraction of KV cache in use, 0..1."""
    kv_capacity_tokens: int = 0
    max_num_seqs: int = 0
    max_model_len: int = 0
