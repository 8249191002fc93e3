"""The benchmark's own smoke run, against the real stack: a few requests, every metric filled."""

from __future__ import annotations

import asyncio

from bench.arrivals import ClosedLoop
from bench.client import Endpoint
from bench.measure import measure
from bench.workload import fixed_lengths
from tests.e2e.stack import API_KEY, Stack


def test_bench_measures_streamed_requests_against_the_app(stack: Stack):
    endpoint = Endpoint(stack.base_url, api_key=API_KEY, timeout_s=120)
    specs = fixed_lengths("tiny-llama", count=8, input_tokens=32, output_tokens=16, stream=True)
    measurement = asyncio.run(measure(endpoint, specs, ClosedLoop(4)))
    summary = measurement.summary
    assert summary.failures == {}
    assert (summary.requests, summary.succeeded) == (8, 8)
    assert summary.output_tokens == 8 * 16
    assert summary.ttft_s.p50 > 0 and summary.itl_s.p99 > 0 and summary.tpot_s.p50 > 0
    assert summary.output_tokens_per_s > 0
