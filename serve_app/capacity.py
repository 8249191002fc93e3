"""A model's admission budget, from what its live replicas report.

Every LLMServer replica reports its EngineStats (KV capacity in tokens, sequence
limit, and its load) every REPORT_INTERVAL_S. The budget is the sum over the
replicas heard from recently, so it grows and shrinks as replicas come and go; a
replica that stops reporting counts as gone (stale signals mean no capacity, never
old capacity). With `engine_queue_fraction` set (it is 0 by default), each replica may
also hold a few requests queued beyond its sequence slots, so a finished sequence's slot
is refilled from the engine's own queue at once, not after its release has reached the
controller and the next admission has come back. When an engine saturates anyway (more queue inside it
than that, or its KV cache is full) the budget tightens, and it recovers slowly once
that stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from serve_app.protocol import EngineStats

REPORT_INTERVAL_S = 0.5
"""How often a replica reports: often enough to see a replica come or go within a second."""

TIGHTEN = 0.9  # per saturated report
RECOVER = 0.02  # per calm report: about 12 s from the floor back to full
FLOOR = 0.5
KV_FULL = 0.98


@dataclass(frozen=True)
class Budget:
    """What may be in flight on a model at once."""

    tokens: float
    """KV tokens admitted requests may reserve (prompt + max output each)."""
    sequences: int
    replicas: int
    max_model_len: int = 0
    burst_tokens: float = 0.0
    """KV tokens held back from the shares, for the bursts of tenants granted below their share."""

    @property
    def slot_tokens(self) -> float:
        """A sequence slot's share of the token budget: the least a request is charged,
        so one token budget also keeps the sequence limit."""
        return self.tokens / self.sequences if self.sequences else 0.0

    def charge(self, cost: int, sequences: int = 1) -> float:
        """Budget tokens a request of `cost` tokens holds: at least a slot per sequence it
        runs, at most the whole budget (a lone giant still fits)."""
        return min(max(float(cost), self.slot_tokens * sequences), self.tokens) if self.tokens else float(cost)


NO_BUDGET = Budget(tokens=0.0, sequences=0, replicas=0)


def queue_allowance(stats: EngineStats, fraction: float) -> int:
    """Requests a replica may hold waiting for a slot: a share of its slots, rounded up
    (so at least one when the share is set), none when it is 0."""
    return math.ceil(stats.max_num_seqs * fraction) if fraction > 0 else 0


def engine_queue(stats: EngineStats) -> int:
    """Requests waiting inside the engine for want of a sequence slot (vLLM counts them among
    its running ones, beyond its limit). Requests waiting only for the next step, with slots
    free, are no sign of saturation."""
    if not stats.max_num_seqs or stats.running < stats.max_num_seqs:
        return 0
    return max(stats.waiting, stats.running - stats.max_num_seqs)


class Capacity:
    """One model's replicas as last reported, and the budget they add up to."""

    def __init__(self, *, kv_fraction: float = 1.0, max_sequences: int = 1 << 30,
                 stale_after_s: float = 3.0, engine_queue_fraction: float = 0.0,
                 burst_fraction: float = 0.0) -> None:
        self._kv_fraction = kv_fraction
        self._burst_fraction = burst_fraction
        self._queue_fraction = engine_queue_fraction
        self._max_sequences = max_sequences
        self._stale_after_s = stale_after_s
        self._reports: dict[str, tuple[EngineStats, float]] = {}
        self.factor = 1.0
        """1 when the engines keep up; down to FLOOR while they saturate."""

    def report(self, replica_id: str, stats: EngineStats, now: float) -> None:
        self._reports[replica_id] = (stats, now)
        if engine_queue(stats) > queue_allowance(stats, self._queue_fraction) or stats.kv_usage >= KV_FULL:
            self.factor = max(FLOOR, self.factor * TIGHTEN)
        else:
            self.factor = min(1.0, self.factor + RECOVER)

    def live(self, now: float) -> list[EngineStats]:
        for replica_id, (_, at) in list(self._reports.items()):
            if now - at > self._stale_after_s:
                del self._reports[replica_id]
        return [stats for stats, _ in self._reports.values()]

    def budget(self, now: float) -> Budget:
        live = [stats for stats in self.live(now) if stats.kv_capacity_tokens and stats.max_num_seqs]
        if not live:
            return NO_BUDGET
        tokens = sum(stats.kv_capacity_tokens for stats in live) * self._kv_fraction
        sequences = min(self._max_sequences, sum(stats.max_num_seqs + queue_allowance(stats, self._queue_fraction)
                                                 for stats in live))
        sequences = max(1, math.floor(sequences * self.factor))
        burst = math.floor(sequences * self._burst_fraction + 1e-9) if sequences > 1 else 0
        tokens *= self.factor
        return Budget(tokens=tokens * (sequences - burst) / sequences, sequences=sequences - burst,
                      replicas=len(live), max_model_len=min(stats.max_model_len for stats in live),
                      burst_tokens=tokens * burst / sequences)
