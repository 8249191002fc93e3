"""When requests are sent: closed loop (N workers) or open loop (seeded arrival times)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Arrival = Literal["poisson", "gamma"]


def poisson_offsets(count: int, rate: float, seed: int = 0) -> list[float]:
    """Send offsets in seconds (the first at 0) of a Poisson process at `rate` requests/s."""
    rng = random.Random(seed)
    return _cumulative(rng.expovariate(rate) for _ in range(count - 1))


def gamma_offsets(count: int, rate: float, shape: float = 0.5, seed: int = 0) -> list[float]:
    """Send offsets of a gamma renewal process at `rate` requests/s.

    Gaps have mean 1/rate and coefficient of variation 1/sqrt(shape): shape < 1
    gives bursts and lulls, shape 1 is Poisson.
    """
    rng = random.Random(seed)
    scale = 1.0 / (rate * shape)
    return _cumulative(rng.gammavariate(shape, scale) for _ in range(count - 1))


def _cumulative(gaps) -> list[float]:
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    return offsets


@dataclass(frozen=True)
class ClosedLoop:
    """`concurrency` workers, each sending its next request when the last one ends."""

    concurrency: int

    @property
    def label(self) -> str:
        return f"c={self.concurrency}"

    @property
    def x(self) -> float:
        return float(self.concurrency)


@dataclass(frozen=True)
class OpenLoop:
    """Requests sent at seeded arrival times, whether or not earlier ones have ended."""

    rate: float
    arrival: Arrival = "poisson"
    shape: float = 0.5
    seed: int = 0

    @property
    def label(self) -> str:
        return f"r={self.rate:g} {self.arrival}"

    @property
    def x(self) -> float:
        return self.rate

    def offsets(self, count: int) -> list[float]:
        if self.arrival == "gamma":
            return gamma_offsets(count, self.rate, self.shape, self.seed)
        return poisson_offsets(count, self.rate, self.seed)


LoadPoint = ClosedLoop | OpenLoop
