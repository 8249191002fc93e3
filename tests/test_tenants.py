"""Tenant limits, specified: token buckets of a minute's worth, charged and corrected."""

from __future__ import annotations

import pytest

from serve_app.config import AdmissionConfig, Tenant
from serve_app.outcomes import Outcome
from serve_app.tenants import TenantLedger, Tenants, TokenBucket


def ledger(**limits: int) -> TenantLedger:
    return TenantLedger(Tenant(name="acme", limits=limits), now=0.0)


def test_a_bucket_starts_full_and_refills_at_its_per_minute_rate():
    bucket = TokenBucket(60, now=0.0)
    bucket.take(60, now=0.0)
    assert bucket.level(0.0) == 0
    assert bucket.level(10.0) == pytest.approx(10)
    assert bucket.level(1000.0) == 60  # never above a minute's worth


def test_a_bucket_says_when_an_amount_will_be_there_and_when_it_is_full():
    bucket = TokenBucket(600, now=0.0)
    bucket.take(600, now=0.0)
    assert bucket.wait_s(100, now=0.0) == pytest.approx(10.0)
    assert bucket.reset_s(now=30.0) == pytest.approx(30.0)


def test_a_bucket_may_go_below_zero_when_usage_exceeds_the_charge():
    bucket = TokenBucket(100, now=0.0)
    bucket.take(100, now=0.0)
    bucket.adjust(-20, now=0.0)
    assert bucket.level(0.0) == -20


def test_an_unlimited_tenant_is_never_refused():
    unlimited = ledger()
    for _ in range(1000):
        assert unlimited.refusal(10**9, now=0.0) is None
        unlimited.charge(10**9, now=0.0)
    assert unlimited.rate_limits(0.0) is None


def test_refusals_name_the_limit_that_was_hit():
    assert ledger(max_concurrent=1).refusal(1, 0.0) is None
    busy = ledger(max_concurrent=1)
    busy.charge(1, 0.0)
    assert busy.refusal(1, 0.0)[0] is Outcome.CONCURRENCY
    spent = ledger(requests_per_minute=1)
    spent.charge(1, 0.0)
    outcome, retry_after, message = spent.refusal(1, 0.0)
    assert outcome is Outcome.REQUESTS_PER_MINUTE and retry_after == pytest.approx(60.0)
    assert "requests per minute" in message and "acme" in message
    assert ledger(tokens_per_minute=10).refusal(11, 0.0)[0] is Outcome.TOO_LARGE
    poor = ledger(tokens_per_minute=10)
    poor.charge(6, 0.0)
    assert poor.refusal(5, 0.0)[0] is Outcome.TOKENS_PER_MINUTE


def test_finishing_returns_unused_tokens_and_refunding_returns_everything():
    account = ledger(requests_per_minute=10, tokens_per_minute=1000, max_concurrent=5)
    account.charge(400, 0.0)
    account.finish(400, used=100, now=0.0)
    limits = account.rate_limits(0.0)
    assert (limits.remaining_tokens, limits.remaining_requests, account.concurrent) == (900, 9, 0)
    account.charge(400, 0.0)
    account.refund(400, 0.0)
    limits = account.rate_limits(0.0)
    assert (limits.remaining_tokens, limits.remaining_requests, account.concurrent) == (900, 9, 0)


def test_unlisted_tenants_get_the_default_class_and_no_limits():
    tenants = Tenants(AdmissionConfig(tenants=[{"name": "acme", "limits": {"requests_per_minute": 5}}]))
    assert tenants.ledger("acme", 0.0).requests is not None
    stranger = tenants.ledger("stranger", 0.0)
    assert stranger.requests is None and stranger.tokens is None and stranger.max_concurrent is None
    assert tenants.ledger("acme", 1.0) is tenants.ledger("acme", 2.0)
