"""Latency and throughput statistics of a run, from per-request results."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from bench.client import RequestResult


class Percentiles(BaseModel):
    """Distribution of one metric in seconds; None where there were no values."""

    count: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class Slo(BaseModel):
    """Targets a request must meet to count towards goodput; None means no target."""

    model_config = ConfigDict(frozen=True)

    ttft_s: float | None = None
    tpot_s: float | None = None


NO_SLO = Slo()


class Summary(BaseModel):
    requests: int
    succeeded: int
    failures: dict[str, int]
    """Failed requests by kind: HTTP status ("429", "503", ...), "timeout", "connection"."""
    retry_after: dict[str, int] = {}
    """Retry-After values the refusals carried, and how often."""
    wall_s: float
    input_tokens: int
    output_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    goodput_rps: float
    slo: Slo = Slo()
    ttft_s: Percentiles
    tpot_s: Percentiles
    itl_s: Percentiles
    e2e_s: Percentiles

    @property
    def failed(self) -> int:
        return self.requests - self.succeeded


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), interpolating linearly between ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentiles(values: Sequence[float]) -> Percentiles:
    if not values:
        return Percentiles()
    return Percentiles(count=len(values), mean=sum(values) / len(values),
                       p50=percentile(values, 50), p90=percentile(values, 90),
                       p99=percentile(values, 99))


def first_token_s(result: RequestResult) -> float | None:
    """Time to first token; without streaming the first token arrives with the whole answer."""
    return result.ttft_s if result.ttft_s is not None else result.e2e_s


def tpot_s(result: RequestResult) -> float | None:
    """Time per output token after the first: (e2e - ttft) / (output tokens - 1)."""
    if result.ttft_s is None or result.e2e_s is None or result.output_tokens < 2:
        return None
    return (result.e2e_s - result.ttft_s) / (result.output_tokens - 1)


def meets(result: RequestResult, slo: Slo) -> bool:
    """Whether a request succeeded within the SLO (a request with one token has no TPOT)."""
    if not result.ok:
        return False
    first, per_token = first_token_s(result), tpot_s(result)
    if slo.ttft_s is not None and (first is None or first > slo.ttft_s):
        return False
    return slo.tpot_s is None or per_token is None or per_token <= slo.tpot_s


def summarise(results: Sequence[RequestResult], wall_s: float, slo: Slo = NO_SLO) -> Summary:
    """Statistics of one run; rates are over `wall_s`, the measured wall time."""
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    output_tokens = sum(r.output_tokens for r in ok)
    per_s = 1.0 / wall_s if wall_s > 0 else 0.0
    return Summary(
        requests=len(results),
        succeeded=len(ok),
        failures=dict(Counter(r.failure for r in failed)),
        retry_after=dict(Counter(r.retry_after for r in failed if r.retry_after is not None)),
        wall_s=wall_s,
        input_tokens=sum(r.input_tokens or 0 for r in ok),
        output_tokens=output_tokens,
        output_tokens_per_s=output_tokens * per_s,
        requests_per_s=len(ok) * per_s,
        goodput_rps=sum(meets(r, slo) for r in ok) * per_s,
        slo=slo,
        ttft_s=percentiles(_present(first_token_s(r) for r in ok)),
        tpot_s=percentiles(_present(tpot_s(r) for r in ok)),
        itl_s=percentiles([gap for r in ok for gap in r.itl_s]),
        e2e_s=percentiles(_present(r.e2e_s for r in ok)),
    )


def _present(values) -> list[float]:
    return [v for v in values if v is not None]
