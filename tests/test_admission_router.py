"""What clients see of admission: OpenAI-shaped refusals with the right status and headers,
rate-limit headers on admitted responses, usage handed back on release."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from serve_app.auth import KeyRing
from serve_app.config import parse_config
from serve_app.outcomes import PRIORITY_HEADER, Decision, Outcome, RateLimits, Usage
from serve_app.protocol import ReplyHead
from serve_app.router import RouterState, build_router_app
from tests.router_doubles import FakeStream

LIMITS = RateLimits(limit_requests=60, remaining_requests=0, reset_requests_s=0.5,
                    limit_tokens=1000, remaining_tokens=10, reset_tokens_s=30.0)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


class FakeGate:
    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.tickets: list = []
        self.released: list[tuple[str | None, Usage | None]] = []

    async def admit(self, ticket):
        self.tickets.append(ticket)
        return self.decision

    def release(self, lease_id, usage=None, first_byte_s=None):
        self.released.append((lease_id, usage))
        self.first_byte_s = first_byte_s


class FakeServer:
    def __init__(self, items: list) -> None:
        self._items = items
        self.generate = self
        self.requests: list = []

    def options(self, **_: object) -> FakeServer:
        return self

    def remote(self, request) -> FakeStream:
        self.requests.append(request)
        return FakeStream(list(self._items))


def client(decision: Decision, reply: list | None = None) -> tuple[TestClient, FakeGate]:
    config = parse_config({
        "models": [{"name": "m", "source": "/m", "engine": "simulated"}],
        "router": {"token_channel": False},
        "admission": {"classes": {"interactive": {"ttft_slo_s": 2}, "batch": {"ttft_slo_s": 30, "priority": 1}},
                      "default_class": "interactive"},
    })
    gate = FakeGate(decision)
    body = json.dumps({"choices": [], "usage": USAGE}).encode()
    servers = {"m": FakeServer(reply or [ReplyHead(200, False), body])}
    state = RouterState(config, KeyRing({}), servers, gate)
    http = TestClient(build_router_app(state, behind_serve_proxy=False))
    http.engine = servers["m"]
    return http, gate


@pytest.mark.parametrize(("outcome", "status"), [
    (Outcome.REQUESTS_PER_MINUTE, 429), (Outcome.TOKENS_PER_MINUTE, 429), (Outcome.CONCURRENCY, 429),
    (Outcome.OVERLOADED, 503), (Outcome.QUEUE_FULL, 503), (Outcome.QUEUE_TIMEOUT, 503),
    (Outcome.UNAVAILABLE, 503),
])
def test_refusals_are_openai_errors_with_status_retry_after_and_rate_limits(outcome, status):
    http, gate = client(Decision(outcome, retry_after_s=2.4, message="slow down", limits=LIMITS))
    response = http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == status
    assert response.json() == {"error": {"message": "slow down",
                                         "type": "rate_limit_error" if status == 429 else "service_unavailable_error",
                                         "param": None, "code": outcome.value}}
    assert response.headers["retry-after"] == "3"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-tokens"] == "30s"
    assert gate.released == []


def test_a_request_too_large_for_its_tenant_gets_429_without_retry_after():
    http, _ = client(Decision(Outcome.TOO_LARGE, message="too large", limits=LIMITS))
    response = http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429 and "retry-after" not in response.headers
    assert response.json()["error"]["code"] == "request_too_large"


def test_admitted_responses_carry_rate_limits_and_release_with_usage():
    http, gate = client(Decision(Outcome.ADMITTED, lease_id="lease-1", limits=LIMITS))
    response = http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "60"
    assert response.headers["x-ratelimit-limit-tokens"] == "1000"
    assert "retry-after" not in response.headers
    assert gate.released == [("lease-1", Usage(9, 4))]
    assert 0 <= gate.first_byte_s < 1
    ticket = gate.tickets[0]
    assert (ticket.model, ticket.tenant, ticket.max_tokens, ticket.priority_class) == ("m", "default", 4, None)
    assert ticket.sequences == 1


def test_admission_is_asked_for_every_sequence_a_request_runs():
    http, gate = client(Decision(Outcome.ADMITTED, lease_id="lease-1", limits=LIMITS))
    assert http.post("/v1/chat/completions", json={**CHAT, "n": 3}).status_code == 200
    assert http.post("/v1/completions", json={"model": "m", "prompt": ["a", "b"], "n": 2}).status_code == 200
    assert [ticket.sequences for ticket in gate.tickets] == [3, 4]


def test_an_admitted_request_reaches_the_engine_with_the_queue_place_admission_gave_it():
    http, _ = client(Decision(Outcome.ADMITTED, lease_id="lease-1", limits=LIMITS, engine_priority=3))
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert http.engine.requests[0].priority == 3


def test_a_stream_releases_with_the_usage_its_replica_counted():
    token = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    events = [ReplyHead(200, True), token, b"data: [DONE]\n\n", Usage(9, 4)]
    http, gate = client(Decision(Outcome.ADMITTED, lease_id="lease-2", limits=LIMITS), events)
    response = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200 and response.content == token + b"data: [DONE]\n\n"
    assert response.headers["x-ratelimit-remaining-tokens"] == "10"
    assert gate.released == [("lease-2", Usage(9, 4))]


def test_a_stream_its_replica_did_not_count_releases_without_usage():
    events = [ReplyHead(200, True), b"data: [DONE]\n\n"]
    http, gate = client(Decision(Outcome.ADMITTED, lease_id="lease-2", limits=LIMITS), events)
    assert http.post("/v1/chat/completions", json={**CHAT, "stream": True}).status_code == 200
    assert gate.released == [("lease-2", None)]


def test_an_engine_error_releases_as_nothing_used():
    error = json.dumps({"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}})
    http, gate = client(Decision(Outcome.ADMITTED, lease_id="lease-3"), [ReplyHead(400, False), error.encode()])
    assert http.post("/v1/chat/completions", json=CHAT).status_code == 400
    assert gate.released == [("lease-3", Usage(0, 0))]


def test_a_replicas_503_reaches_the_client_with_its_retry_after():
    error = json.dumps({"error": {"message": "engine died", "type": "ServiceUnavailableError", "param": None,
                                  "code": "engine_unavailable"}})
    reply = [ReplyHead(503, False, headers={"Retry-After": "1"}), error.encode()]
    http, gate = client(Decision(Outcome.ADMITTED, lease_id="lease-4"), reply)
    response = http.post("/v1/chat/completions", json=CHAT)
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    assert response.json()["error"]["code"] == "engine_unavailable"
    assert gate.released == [("lease-4", Usage(0, 0))]


def test_the_priority_header_names_a_class_or_is_refused():
    http, gate = client(Decision(Outcome.ADMITTED, lease_id="l"))
    assert http.post("/v1/chat/completions", json=CHAT, headers={PRIORITY_HEADER: "batch"}).status_code == 200
    assert gate.tickets[0].priority_class == "batch"
    refused = http.post("/v1/chat/completions", json=CHAT, headers={PRIORITY_HEADER: "platinum"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_priority_class"
    assert refused.json()["error"]["param"] == PRIORITY_HEADER


def server_timing(response) -> dict[str, float]:
    metrics = (part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    return {name: float(milliseconds) for name, milliseconds in metrics}


def test_a_refusal_says_in_server_timing_how_long_admission_and_the_router_took():
    http, _ = client(Decision(Outcome.OVERLOADED, retry_after_s=1, message="busy", limits=LIMITS))
    timing = server_timing(http.post("/v1/chat/completions", json=CHAT))
    assert set(timing) == {"admission", "router"}
    assert 0 <= timing["admission"] <= timing["router"]


def test_an_admitted_answer_says_it_too():
    http, _ = client(Decision(Outcome.ADMITTED, lease_id="lease-1", limits=LIMITS))
    response = http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and set(server_timing(response)) == {"admission", "router"}


def test_a_request_turned_away_before_admission_has_only_the_router_time():
    http, _ = client(Decision(Outcome.ADMITTED, lease_id="lease-1", limits=LIMITS))
    response = http.post("/v1/chat/completions", json={"model": "m"})
    assert response.status_code == 400 and set(server_timing(response)) == {"router"}
