"""One model's admission state: its leases, its waiting requests and its tenants' shares.

Capacity is counted in budget tokens (see `Budget.charge`). A tenant within its
weighted share of the budget may use any free capacity; a tenant beyond it may
only borrow what the other recently active tenants are not entitled to, so a
tenant that floods cannot take the room a lighter one needs to start at once.
The shares are among tenants active within the fair-share window, each reserving
no more than its recent peak demand and half again; room is kept only for tenants of the same or
a higher priority class (a lower class never holds back a higher one), and only for
tenants served no more than the one asking by weighted token cost over the window: a
share of slots is fairness at an instant, service is fairness over time, and a light
tenant's burst beyond its slots may use the room of a tenant served far more lately. A
tenant that becomes active starts level with the least served of the others, so a
newcomer that floods cannot pass for the least served.

A share of the slots may be kept out of the shares altogether (`Budget.burst_tokens`):
a tenant granted less than its weighted share of all grants lately starts there when the
shares have no room for it. An engine never preempts a running sequence to make room, so
without it a light tenant's burst beyond its room waits for a flood's leases to end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import Enum

from serve_app.capacity import Budget, Capacity
from serve_app.drain import Lease, LeaseDrain
from serve_app.estimates import FadingRate, FadingSum, PeakWindow, Spread
from serve_app.fair_queue import FairQueue, Waiter
from serve_app.outcomes import Ticket, Usage

PACE_SMOOTHING = 0.1
MIN_PACE_TOKENS = 4
START_SMOOTHING = 0.05
PROMPT_SMOOTHING = 0.05
PROMPT_SCALE_RANGE = (0.25, 4.0)
BURST_HEADROOM = 1.5  # room kept for a tenant: its recent peak and half again, for its next burst
INFLOW_ROUNDS = 2
"""Times a foreseen wait is redone with what others will be granted ahead during it: each
round adds the next term of a geometric series, enough while they take well under the drain."""


class Fit(Enum):
    FITS = "fits"
    BURST = "burst"
    """No room within the shares, but a tenant granted below its share may take the burst room."""
    NO_ROOM = "no_room"
    OVER_SHARE = "over_share"

    @property
    def starts(self) -> bool:
        return self in (Fit.FITS, Fit.BURST)


class ModelPool:
    def __init__(self, name: str, capacity: Capacity, fair_share_window_s: float) -> None:
        self.name = name
        self.capacity = capacity
        self.queue = FairQueue()
        self.drain = LeaseDrain(PACE_SMOOTHING)
        self.in_flight = 0.0
        self.burst_in_flight = 0.0
        self.prompt_scale = 1.0
        """Engine-counted prompt tokens per router-estimated one, learned from usage."""
        self.first_byte = Spread(START_SMOOTHING)
        """Seconds from admission to the engine's first bytes, as routers measure them: the
        part of a TTFT SLO that waiting in the queue cannot use."""
        self._held: dict[str, float] = {}
        self._served: dict[str, FadingSum] = {}
        """Budget tokens granted per unit of weight, fading over the fair-share window."""
        self._granted: dict[str, FadingRate] = {}
        """Budget tokens granted per second, over the fair-share window."""
        self._demand: dict[str, PeakWindow] = {}
        self._weights: dict[str, float] = {}
        self._priorities: dict[str, int] = {}  # of each tenant's latest request
        self._window_s = fair_share_window_s

    def cost(self, ticket: Ticket, budget: Budget) -> tuple[int, int]:
        """Prompt tokens (calibrated estimate) and max output of all its sequences, each
        sequence's output capped by the context."""
        prompt = max(1, math.ceil(ticket.prompt_tokens * self.prompt_scale))
        output = ticket.max_tokens
        if budget.max_model_len:
            output = max(1, min(output, budget.max_model_len - prompt))
        return prompt, output * ticket.sequences

    @staticmethod
    def foreseen_output(ticket: Ticket, budget: Budget) -> int:
        """Output tokens to foresee a request's hold time by: its max_tokens, capped by the
        context but not by the context less the prompt estimate. An estimate that runs high
        (before calibration) would cut the output to nothing and foresee every lease ending
        at once; the engine's own cap on a long prompt's output is rare enough to ignore."""
        return max(1, min(ticket.max_tokens, budget.max_model_len or ticket.max_tokens))

    def serving(self) -> list[str]:
        """Tenants holding capacity now."""
        return [tenant for tenant, held in self._held.items() if held > 0]

    # ------------------------------------------------------------ fair shares

    def fit(self, waiter: Waiter, budget: Budget, now: float) -> Fit:
        # Charged against the budget of now: one foreseen when no replica had reported
        # would let a crowd of requests in as if sequences were free.
        charge = waiter.charge_in(budget)
        room = budget.tokens - self.in_flight
        if not budget.tokens or charge > room + 1e-6:
            return self._burst_or(Fit.NO_ROOM, waiter, budget, now)
        active = self._active(budget, now)
        if charge + self._unheld(self._kept_for_others(waiter, budget, now, active)) <= room + 1e-6:
            return Fit.FITS
        return self._burst_or(Fit.OVER_SHARE, waiter, budget, now, active)

    def _burst_or(self, shortfall: Fit, waiter: Waiter, budget: Budget, now: float,
                  active: dict[str, float] | None = None) -> Fit:
        """BURST if the request fits the burst room and its tenant was granted below its share,
        else `shortfall`. The active tenants are looked up only when the burst room could take it."""
        if waiter.charge_in(budget) > budget.burst_tokens - self.burst_in_flight + 1e-6:
            return shortfall
        active = self._active(budget, now) if active is None else active
        return Fit.BURST if self._granted_below_share(waiter, now, active) else shortfall

    def _granted_below_share(self, waiter: Waiter, now: float, active: dict[str, float]) -> bool:
        """Whether the tenant was lately granted less than its weighted share of all that was
        granted, with other tenants active (so never when alone). By grant rates, not by the
        fair queue's service: that starts a newcomer level with the least served, so a light
        tenant's burst at a flood's onset would count as its being served as much as the flood."""
        others = [name for name in active if name != waiter.tenant]
        if not others:
            return False
        names = [*others, waiter.tenant]
        rates = [self._granted[name].per_second(now) if name in self._granted else 0.0 for name in names]
        weights = [self._weights.get(name, waiter.weight) for name in names]
        return rates[-1] < sum(rates) * weights[-1] / sum(weights)

    def _unheld(self, kept: dict[str, float]) -> float:
        """Of the room `kept` for each tenant, what the tenant does not hold now."""
        return sum(max(0.0, level - self._held.get(name, 0.0)) for name, level in kept.items())

    def _kept_for_others(self, waiter: Waiter, budget: Budget, now: float,
                         active: dict[str, float]) -> dict[str, float]:
        """The budget tokens kept for each other tenant, if `waiter` would take its tenant past
        its share: for those it would not overtake by weighted token cost even with this request."""
        total_weight = sum(self._weights[name] for name in active) or 1.0
        charge = waiter.charge_in(budget)
        if self._held.get(waiter.tenant, 0.0) + charge <= budget.tokens * waiter.weight / total_weight + 1e-6:
            return {}
        passing = self.served(waiter.tenant, now) + charge / waiter.weight
        return {name: min(budget.tokens * self._weights[name] / total_weight, BURST_HEADROOM * demand)
                for name, demand in active.items()
                if name != waiter.tenant and self._priorities[name] <= waiter.priority
                and self.served(name, now) <= passing}

    def engine_priority(self, waiter: Waiter, now: float) -> int:
        """Where the engine should queue the request among those waiting inside it, lower
        first (vLLM's priority scheduling): by class, then a tenant served more than the
        average of the active ones lately after the others. Admission's order holds only up
        to the engine's door; without this, a light tenant's prompt waits there behind every
        prompt a flood was granted in the same instant."""
        served = [self.served(name, now) for name in self._demand]
        above = bool(served) and self.served(waiter.tenant, now) > sum(served) / len(served) * (1 + 1e-9)
        return 2 * waiter.priority + int(above)

    def served(self, tenant: str, now: float) -> float:
        """Budget tokens per unit of weight the tenant was granted lately (see `_served`)."""
        served = self._served.get(tenant)
        return served.value(now) if served else 0.0

    def _active(self, budget: Budget, now: float) -> dict[str, float]:
        """Tenants whose demand in the window is at least half a sequence slot."""
        active, gone = {}, []
        for name in self._demand:
            demand = self._demand_of(name, now)
            if demand >= 0.5 * budget.slot_tokens:
                active[name] = demand
            elif not self._held.get(name) and not self.queue.queued(name):
                gone.append(name)
        for name in gone:
            del self._demand[name]
            self._served.pop(name, None)
            self._granted.pop(name, None)
        return active

    def _demand_of(self, tenant: str, now: float) -> float:
        current = self._held.get(tenant, 0.0) + self.queue.queued(tenant)
        window = self._demand.get(tenant)
        return max(current, window.peak(now)) if window else current

    def note_demand(self, tenant: str, weight: float, priority: int, now: float, asking: float = 0.0) -> None:
        """Note what the tenant holds and waits for, plus what it is `asking` for now: a request
        refused for want of room still shows the tenant wants its share."""
        self._weights[tenant], self._priorities[tenant] = weight, priority
        window = self._demand.get(tenant)
        if window is None:  # it becomes active: level with the least served of the others
            others = [self.served(name, now) for name in self._demand]
            self._served[tenant] = FadingSum(self._window_s, now, min(others, default=0.0))
            window = self._demand[tenant] = PeakWindow(self._window_s, now)
        window.note(self._held.get(tenant, 0.0) + self.queue.queued(tenant) + asking, now)

    # ---------------------------------------------------------------- leases

    def start_afresh(self, tenant: str, budget: Budget, now: float) -> None:
        """Lift a tenant that neither holds nor waits for capacity to the lowest counter of
        the others active, as the fair queue lifts one that starts waiting: time spent idle
        banks no credit to take their room with."""
        if not self._held.get(tenant) and not self.queue.queued(tenant):
            self.queue.lift(tenant, self._active_or_serving(budget, now))

    def enqueue(self, waiter: Waiter, budget: Budget, now: float) -> None:
        """Queue a request that cannot start now. A tenant with requests in flight keeps up to
        a budget of credit (see `FairQueue`)."""
        holding = self._held.get(waiter.tenant, 0.0) > 0
        self.queue.push(waiter, self._active_or_serving(budget, now),
                        credit=budget.tokens / waiter.weight if holding else 0.0)

    def _active_or_serving(self, budget: Budget, now: float) -> list[str]:
        return [*self._active(budget, now), *self.serving()]

    @property
    def leases(self) -> dict[str, Lease]:
        return self.drain.leases

    def grant(self, waiter: Waiter, lease_id: str, budget: Budget, now: float, ttl_s: float,
              burst: bool = False) -> Lease:
        lease = self.drain.add(Lease(lease_id, self.name, waiter.tenant, waiter.weight, waiter.priority, waiter.cost,
                                     waiter.charge_in(budget), budget.slot_tokens * waiter.sequences,
                                     waiter.ticket.prompt_tokens,
                                     waiter.output_tokens, now, now + ttl_s, burst=burst), now)
        if burst:
            self.burst_in_flight += lease.charge
        else:
            self.in_flight += lease.charge
        self._held[lease.tenant] = self._held.get(lease.tenant, 0.0) + lease.charge
        self.note_demand(lease.tenant, lease.weight, lease.priority, now)
        self._serve(lease.tenant, lease.charge, lease.weight, now)
        if lease.tenant not in self._granted:
            self._granted[lease.tenant] = FadingRate(self._window_s, now)
        self._granted[lease.tenant].note(lease.charge, now)
        return lease

    def finish(self, lease: Lease, usage: Usage | None, now: float, *, released: bool = True,
               first_byte_s: float | None = None) -> None:
        generated = usage.completion_tokens if usage is not None else lease.output_tokens
        # An expired lease says nothing about how long requests take, nor does a very short
        # one, whose time is mostly the fixed cost of starting (a readiness probe, say).
        self.drain.remove(lease, now, generated if released and generated >= MIN_PACE_TOKENS else None)
        if lease.burst:
            self.burst_in_flight = max(0.0, self.burst_in_flight - lease.charge)
        else:
            self.in_flight = max(0.0, self.in_flight - lease.charge)
        held = self._held[lease.tenant] - lease.charge
        # Charges differ as the budget moves, so the last lease's end can leave a rounding
        # residue; kept, it would count the tenant as serving forever, and a newcomer's
        # fair-queue counter and service would be lifted only to its stale level.
        self._held[lease.tenant] = held if held > 1e-6 * lease.charge else 0.0
        if usage is not None:
            self._learn(lease, usage)
            self._serve(lease.tenant, max(float(usage.total), lease.floor) - lease.charge, lease.weight, now)
        if first_byte_s is not None:
            self.first_byte.note(first_byte_s)

    def _serve(self, tenant: str, charge: float, weight: float, now: float) -> None:
        """Count service both ways: the fair queue's counter and the fading sum."""
        self.queue.served(tenant, charge, weight)
        served = self._served.get(tenant)
        if served is not None:  # a tenant gone from the window has nothing to count against
            served.add(charge / weight, now)

    def _learn(self, lease: Lease, usage: Usage) -> None:
        if usage.prompt_tokens and lease.prompt_estimate:
            ratio = usage.prompt_tokens / lease.prompt_estimate
            scale = self.prompt_scale + PROMPT_SMOOTHING * (ratio - self.prompt_scale)
            self.prompt_scale = min(max(scale, PROMPT_SCALE_RANGE[0]), PROMPT_SCALE_RANGE[1])

    # -------------------------------------------------------------- foresight

    def foreseen_wait(self, waiter: Waiter, budget: Budget, now: float) -> float | None:
        """Seconds until `waiter` (the last of its tenant's line) could start; None while
        the pace is unknown. What others do meanwhile counts, or a flood's request queued
        behind a light tenant is foreseen to start in time and refused after waiting in vain:
        - room kept for a tenant (`_kept_for_others`) is refilled by its own lease ends, so
          these free nothing for `waiter` while that tenant holds no more than is kept for it;
        - tenants it makes way for otherwise keep coming: what they are granted meanwhile is
          released room it does not get."""
        active = self._active(budget, now)
        kept = self._kept_for_others(waiter, budget, now, active)
        refilled = {name: level for name, level in kept.items() if self._held.get(name, 0.0) <= level + 1e-6}
        need = (self.queue.charge_ahead(waiter) + waiter.charge + self._unheld(kept)
                - (budget.tokens - self.in_flight))
        wait = self.drain.wait_s(need, budget, now, refilled)
        inflow = self._inflow_ahead(waiter, budget, now, active, excluding=kept)
        for _ in range(INFLOW_ROUNDS):
            if not wait or not inflow:
                break
            wait = self.drain.wait_s(need + inflow * wait, budget, now, refilled)
        return wait

    def _inflow_ahead(self, waiter: Waiter, budget: Budget, now: float, active: dict[str, float],
                      excluding: Iterable[str] = ()) -> float:
        """Budget tokens per second lately granted to the active tenants whose next requests
        would be served before `waiter`: those of a higher class, and those of its class
        served no more than its tenant will have been once it starts."""
        passing = self.served(waiter.tenant, now) + waiter.charge_in(budget) / waiter.weight
        skipped = {waiter.tenant, *excluding}
        return sum(self._granted[name].per_second(now) for name in active
                   if name not in skipped and name in self._granted
                   and (self._priorities[name] < waiter.priority
                        or (self._priorities[name] == waiter.priority and self.served(name, now) <= passing)))
