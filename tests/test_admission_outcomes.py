"""The admission seam's one table: outcome -> status, error code, headers."""

from __future__ import annotations

import pytest

from serve_app.outcomes import (
    OUTCOMES,
    Decision,
    Outcome,
    RateLimits,
    format_reset,
    rate_limit_headers,
    response_headers,
)

LIMITS = RateLimits(limit_requests=60, remaining_requests=59, reset_requests_s=1.0,
                    limit_tokens=150_000, remaining_tokens=149_000, reset_tokens_s=0.4)


def test_every_outcome_has_a_status():
    assert set(OUTCOMES) == set(Outcome)


def test_tenant_limits_are_429_and_capacity_refusals_are_503():
    tenant = {Outcome.REQUESTS_PER_MINUTE, Outcome.TOKENS_PER_MINUTE, Outcome.CONCURRENCY, Outcome.TOO_LARGE}
    assert {outcome for outcome, spec in OUTCOMES.items() if spec.status == 429} == tenant
    capacity = set(Outcome) - tenant - {Outcome.ADMITTED}
    assert all(OUTCOMES[outcome].status == 503 for outcome in capacity)
    assert OUTCOMES[Outcome.ADMITTED].status == 200


@pytest.mark.parametrize("outcome", [o for o in Outcome if o not in (Outcome.ADMITTED, Outcome.TOO_LARGE)])
def test_every_retryable_refusal_carries_retry_after_in_whole_seconds(outcome):
    assert response_headers(Decision(outcome, retry_after_s=0.2))["Retry-After"] == "1"
    assert response_headers(Decision(outcome, retry_after_s=2.1))["Retry-After"] == "3"
    assert response_headers(Decision(outcome))["Retry-After"] == "1"


def test_a_request_too_large_for_its_tenant_has_no_retry_after():
    assert "Retry-After" not in response_headers(Decision(Outcome.TOO_LARGE))


def test_admitted_responses_carry_rate_limits_and_no_retry_after():
    headers = response_headers(Decision(Outcome.ADMITTED, lease_id="l", limits=LIMITS))
    assert headers == {
        "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "150000", "x-ratelimit-remaining-tokens": "149000",
        "x-ratelimit-reset-tokens": "400ms",
    }


def test_only_the_limits_a_tenant_has_are_sent():
    headers = rate_limit_headers(RateLimits(limit_tokens=10, remaining_tokens=3, reset_tokens_s=42.0))
    assert set(headers) == {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}
    assert rate_limit_headers(None) == {}


@pytest.mark.parametrize(("seconds", "text"), [(0.0, "0ms"), (0.0201, "21ms"), (1.0, "1s"), (1.42, "1.5s"),
                                               (59.9, "59.9s"), (60.0, "1m0s"), (360.0, "6m0s"), (361.2, "6m2s")])
def test_resets_are_written_as_openai_writes_them(seconds, text):
    assert format_reset(seconds) == text
