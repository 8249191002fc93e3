"""Per-tenant limits: requests and tokens per minute, and requests at once.

Rates are token buckets holding a minute's worth (a tenant may burst its whole
minute, then runs at the steady rate). Tokens are charged at admission (prompt
estimate + max output) and corrected when the request ends with what it used.
Kept by the one AdmissionController, so they hold however many routers run.
"""

from __future__ import annotations

from serve_app.config import AdmissionConfig, Tenant
from serve_app.outcomes import Outcome, RateLimits


class TokenBucket:
    """`per_minute` units, refilled continuously; the level may go below zero when a
    finished request turns out to have used more than it was charged."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._level = self.capacity
        self._at = now

    def level(self, now: float) -> float:
        if now > self._at:
            self._level = min(self.capacity, self._level + (now - self._at) * self._rate)
            self._at = now
        return self._level

    def take(self, amount: float, now: float) -> None:
        self._level = self.level(now) - amount

    def adjust(self, delta: float, now: float) -> None:
        self._level = min(self.capacity, self.level(now) + delta)

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until `amount` units are available."""
        return max(0.0, (amount - self.level(now)) / self._rate)

    def reset_s(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        return self.wait_s(self.capacity, now)


class TenantLedger:
    """One tenant's rate buckets and how many of its requests are admitted or waiting."""

    def __init__(self, tenant: Tenant, now: float) -> None:
        limits = tenant.limits
        self.tenant = tenant
        self.requests = TokenBucket(limits.requests_per_minute, now) if limits.requests_per_minute else None
        self.tokens = TokenBucket(limits.tokens_per_minute, now) if limits.tokens_per_minute else None
        self.max_concurrent = limits.max_concurrent
        self.concurrent = 0

    def refusal(self, cost: int, now: float) -> tuple[Outcome, float | None, str] | None:
        """Why a request of `cost` tokens may not start now (outcome, retry after, message)."""
        if self.max_concurrent is not None and self.concurrent >= self.max_concurrent:
            return (Outcome.CONCURRENCY, None,
                    f"tenant {self.tenant.name!r} already has {self.concurrent} requests in progress, "
                    f"its limit is {self.max_concurrent}")
        if self.requests is not None and self.requests.level(now) < 1.0:
            return (Outcome.REQUESTS_PER_MINUTE, self.requests.wait_s(1.0, now),
                    f"rate limit reached for tenant {self.tenant.name!r} on requests per minute: "
                    f"limit {int(self.requests.capacity)}")
        if self.tokens is not None and cost > self.tokens.capacity:
            return (Outcome.TOO_LARGE, None,
                    f"request too large for tenant {self.tenant.name!r} on tokens per minute: "
                    f"limit {int(self.tokens.capacity)}, requested {cost} (prompt + max_tokens)")
        if self.tokens is not None and self.tokens.level(now) < cost:
            return (Outcome.TOKENS_PER_MINUTE, self.tokens.wait_s(cost, now),
                    f"rate limit reached for tenant {self.tenant.name!r} on tokens per minute: "
                    f"limit {int(self.tokens.capacity)}, requested {cost}")
        return None

    def charge(self, cost: int, now: float) -> None:
        self.concurrent += 1
        if self.requests is not None:
            self.requests.take(1.0, now)
        if self.tokens is not None:
            self.tokens.take(cost, now)

    def refund(self, cost: int, now: float) -> None:
        """A charged request that was refused after all: it used nothing."""
        self.concurrent -= 1
        if self.requests is not None:
            self.requests.adjust(1.0, now)
        if self.tokens is not None:
            self.tokens.adjust(cost, now)

    def finish(self, charged: int, used: int | None, now: float) -> None:
        self.concurrent -= 1
        if self.tokens is not None and used is not None:
            self.tokens.adjust(charged - used, now)

    def rate_limits(self, now: float) -> RateLimits | None:
        if self.requests is None and self.tokens is None:
            return None
        values = {}
        if self.requests is not None:
            values.update(limit_requests=int(self.requests.capacity),
                          remaining_requests=max(0, int(self.requests.level(now))),
                          reset_requests_s=self.requests.reset_s(now))
        if self.tokens is not None:
            values.update(limit_tokens=int(self.tokens.capacity),
                          remaining_tokens=max(0, int(self.tokens.level(now))),
                          reset_tokens_s=self.tokens.reset_s(now))
        return RateLimits(**values)


class Tenants:
    """Every tenant's ledger, made on first use from the config."""

    def __init__(self, config: AdmissionConfig) -> None:
        self._config = config
        self._ledgers: dict[str, TenantLedger] = {}

    def ledger(self, name: str, now: float) -> TenantLedger:
        ledger = self._ledgers.get(name)
        if ledger is None:
            ledger = self._ledgers[name] = TenantLedger(self._config.tenant(name), now)
        return ledger
