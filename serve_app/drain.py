"""The leases in flight and when they will end: how soon admitted room is foreseen to free.

A lease is held from its grant until the router releases it, for about its output tokens
times the engine's pace (seconds per token). An engine that batches runs each lease slower
the more leases are in flight, so the pace is learned by crowd (`PaceCurve`), and a lease's
progress so far is foreseen from the crowd it actually ran in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from serve_app.capacity import Budget
from serve_app.estimates import PaceCurve

EMPTY: Mapping[str, float] = MappingProxyType({})


@dataclass(eq=False)
class Lease:
    lease_id: str
    model: str
    tenant: str
    weight: float
    priority: int
    cost: int
    charge: float
    floor: float
    """The least budget tokens a request of as many sequences held when this one was granted
    (a slot each)."""
    prompt_estimate: int
    output_tokens: int
    """Most tokens it may generate: how long it is held scales with them."""
    granted_at: float
    expires_at: float
    lease_s_at_grant: float = 0.0
    """The drain's lease-seconds so far when it was granted (see `LeaseDrain.lease_s`)."""
    burst: bool = False
    """Held in the burst room (`Budget.burst_tokens`), not within the shares."""


class LeaseDrain:
    def __init__(self, smoothing: float) -> None:
        self.leases: dict[str, Lease] = {}  # in grant order: the oldest is expected to end first
        self.pace = PaceCurve(smoothing)
        """Seconds a lease is held per output token, grant to release, by the leases in
        flight alongside it."""
        self.lease_s = 0.0
        """Leases in flight integrated over time: a lease's mean company is the growth of this
        over its life divided by its length."""
        self._lease_s_at = 0.0

    def add(self, lease: Lease, now: float) -> Lease:
        self.integrate(now)
        lease.lease_s_at_grant = self.lease_s
        self.leases[lease.lease_id] = lease
        return lease

    def remove(self, lease: Lease, now: float, generated: int | None) -> None:
        """Take a lease out; one that `generated` tokens teaches the pace."""
        self.integrate(now)
        del self.leases[lease.lease_id]
        if generated:
            held_s = now - lease.granted_at
            company = (self.lease_s - lease.lease_s_at_grant) / held_s if held_s > 0 else float(len(self.leases) + 1)
            self.pace.note(held_s / generated, company)

    def integrate(self, now: float) -> None:
        self.lease_s += len(self.leases) * (now - self._lease_s_at)
        self._lease_s_at = now

    def crowded_pace(self) -> float:
        """The pace at the crowd in flight now: an engine that batches runs each lease slower
        the more there are. Above any crowd seen it is stretched in proportion, as a
        compute-bound engine slows (see `PaceCurve`): when a quiet spell taught the pace, this
        keeps a sudden flood from being queued as if it would be served as fast, then refused
        after waiting. The first release at a larger crowd shows how much this engine slows."""
        return self.pace.at(len(self.leases))

    def overdue_pace(self, now: float) -> float:
        """The least pace the leases in flight prove: when most of them are held longer
        than the learned pace foresaw (the load rose faster than releases could teach),
        requests now take at least this long per token. A lone stuck lease proves nothing."""
        shown = sorted((now - lease.granted_at) / max(1, lease.output_tokens) for lease in self.leases.values())
        return shown[len(shown) // 2] if shown else 0.0

    def _foreseen_end(self, lease: Lease, pace: float, overdue: float, now: float) -> float:
        """When a lease should end: the tokens it has yet to generate, at `pace`. What it has
        generated so far is foreseen from the crowd it ran in until now (or the `overdue` pace
        if leases prove slower), so one that ran most of its life in a quiet engine is not
        foreseen as if it had crawled at today's crowded pace from the start (at a flood's
        onset that refused a light tenant's burst). `lease_s` must be integrated to `now`."""
        held_s = now - lease.granted_at
        if held_s <= 0:
            return now + pace * lease.output_tokens
        company = (self.lease_s - lease.lease_s_at_grant) / held_s
        pace_so_far = max(self.pace.at(company), overdue, 1e-9)
        return now + pace * max(0.0, lease.output_tokens - held_s / pace_so_far)

    def wait_s(self, need: float, budget: Budget, now: float, refilled: Mapping[str, float] = EMPTY) -> float | None:
        """Seconds until `need` budget tokens are released, foreseen from when each lease
        in flight should end; None while the pace is unknown. `refilled` names the tenants
        whose room is kept for them (and how much): their lease ends free nothing, and the
        budget that turns over is the rest. Nor does a burst lease's end free room in the budget."""
        if need <= 0:
            return 0.0
        if not self.pace.known or budget.tokens <= 0 or not self.leases:
            return None
        self.integrate(now)
        overdue = self.overdue_pace(now)
        pace = max(self.crowded_pace(), overdue)
        ends = sorted((self._foreseen_end(lease, pace, overdue, now), lease.charge)
                      for lease in self.leases.values() if not lease.burst and lease.tenant not in refilled)
        freed, last = 0.0, now
        for end, charge in ends:
            last = max(now, end)
            freed += charge
            if freed >= need:
                return last - now
        # Beyond all in flight: the budget not kept for others turns over once per typical lease.
        typical_s = pace * sum(lease.output_tokens for lease in self.leases.values()) / len(self.leases)
        turnover = max(budget.tokens - sum(refilled.values()), budget.slot_tokens)
        return last - now + math.ceil((need - freed) / turnover) * typical_s
