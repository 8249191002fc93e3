"""Admission across two router replicas on a simulated engine of known capacity:
tenant limits hold cluster-wide, refusals are OpenAI-shaped and early, capacity is discovered."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from serve_app.config import AdmissionConfig
from tests.e2e.admission_stack import controller  # noqa: F401 (a fixture)
from tests.e2e.admission_stack import FAIR_SHARE_WINDOW_S, KEYS, SIMULATED, Controller, chat, simulated_config
from tests.e2e.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(simulated_config(routers=2)) as running:
        yield running


@pytest.fixture
def quiet() -> None:
    """Let earlier tests' tenants fall out of the fair-share window."""
    time.sleep(FAIR_SHARE_WINDOW_S * 1.2)


def send_all(stack: Stack, tenant: str, bodies: list[dict]) -> list[tuple[httpx.Response, float]]:
    """Send concurrently, each on its own connection so the ingress spreads them over the routers."""
    async def one(client: httpx.AsyncClient, body: dict) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = await client.post("/v1/chat/completions", json=body)
        return response, time.monotonic() - started

    async def every() -> list[tuple[httpx.Response, float]]:
        limits = httpx.Limits(max_keepalive_connections=0)
        headers = {"Authorization": f"Bearer {KEYS[tenant]}"}
        async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(one(client, body) for body in bodies))

    return asyncio.run(every())


def statuses(results: list[tuple[httpx.Response, float]]) -> Counter:
    return Counter(response.status_code for response, _ in results)


def test_two_routers_serve_the_app(stack: Stack):
    from ray import serve

    router = serve.status().applications["llm"].deployments["Router"]
    assert router.replica_states.get("RUNNING") == 2


def test_capacity_is_discovered_from_the_replicas_reports(controller: Controller):
    model = controller("snapshot")["models"]["sim"]
    assert model["replicas"] == 1
    assert model["budget_tokens"] == SIMULATED["kv_tokens"]
    allowance = math.ceil(SIMULATED["max_batch"] * AdmissionConfig().engine_queue_fraction)
    assert model["sequences"] == SIMULATED["max_batch"] + allowance  # slots, and a short queue inside


def test_requests_per_minute_hold_across_routers(stack: Stack, quiet: None):
    results = send_all(stack, "metered", [chat(2)] * 40)
    counts = statuses(results)
    assert set(counts) == {200, 429}
    assert 20 <= counts[200] <= 21  # a minute's worth, plus at most one refilled meanwhile
    refused = next(response for response, _ in results if response.status_code == 429)
    assert refused.json()["error"]["code"] == "requests_per_minute_exceeded"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "20"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    admitted = next(response for response, _ in results if response.status_code == 200)
    assert admitted.headers["x-ratelimit-limit-requests"] == "20"
    assert "x-ratelimit-reset-requests" in admitted.headers


def test_concurrency_limits_hold_across_routers(stack: Stack, quiet: None):
    results = send_all(stack, "narrow", [chat(50, stream=True)] * 8)  # each streams ~1 s
    assert statuses(results) == Counter({200: 3, 429: 5}), [r.text[:200] for r, _ in results]


def test_the_openai_client_sees_a_rate_limit_error_with_retry_after(stack: Stack):
    from openai import OpenAI, RateLimitError

    client = OpenAI(base_url=stack.base_url + "/v1", api_key=KEYS["metered"], max_retries=0)
    with pytest.raises(RateLimitError) as refused:
        for _ in range(30):
            client.chat.completions.create(**chat(1))
    assert refused.value.response.headers["retry-after"]
    assert refused.value.code == "requests_per_minute_exceeded"


def test_overload_is_refused_at_once_with_503_and_retry_after(stack: Stack, quiet: None):
    send_all(stack, "free", [chat(100)])  # teaches the controller how long requests hold capacity
    results = send_all(stack, "free", [chat(100)] * 30)  # 4 fit; each holds its slot ~2 s > 0.8 s wait
    counts = statuses(results)
    assert counts[200] >= 4 and counts[503] >= 20
    refusals = [(response, seconds) for response, seconds in results if response.status_code == 503]
    assert max(seconds for _, seconds in refusals) < 0.5  # refused early, not after waiting in vain
    error = refusals[0][0].json()["error"]
    assert error["code"] == "overloaded" and error["type"] == "service_unavailable_error"
    assert int(refusals[0][0].headers["retry-after"]) >= 1


def test_a_request_may_ask_for_an_unknown_class_only_to_be_refused(stack: Stack):
    headers = {"Authorization": f"Bearer {KEYS['free']}", "x-priority-class": "gold"}
    response = httpx.post(stack.base_url + "/v1/chat/completions", json=chat(1), headers=headers, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_priority_class"


def test_after_the_load_nothing_is_left_in_flight(controller: Controller):
    deadline = time.monotonic() + 10
    while (snapshot := controller("snapshot"))["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert snapshot["in_flight"] == 0 and snapshot["queued"] == 0
