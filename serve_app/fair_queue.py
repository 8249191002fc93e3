"""Requests waiting for one model's capacity, in the order they will be served.

Order: by class priority (strictly); within a class, the tenant whose virtual
token counter is lowest goes first (its counter grows by the budget tokens it is
granted, divided by its weight, so capacity is shared by weighted token cost);
within a tenant, first come first served. A tenant that starts waiting is lifted
to the lowest counter among the other tenants active now (waiting in its class, or
holding capacity), so time it spent idle banks no credit against them (as in VTC,
Sheng et al., OSDI 2024): a tenant that starts flooding does not get the whole
capacity until its counter catches up with a light tenant's that was served all along.
A tenant with requests in flight is not idle: it may stay behind the others by up to
a `credit` (its owner passes one budget), so a light tenant served all along keeps
its place ahead of a flood when its burst has to wait, yet cannot bank more than that.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from serve_app.capacity import Budget
from serve_app.outcomes import Decision, Ticket


@dataclass(eq=False)
class Waiter:
    ticket: Ticket
    service_class: str
    priority: int
    weight: float
    cost: int
    """Tokens: prompt + max output."""
    output_tokens: int
    charge: float
    """Budget tokens it will hold (at least a sequence slot's share)."""
    deadline: float
    arrived: float
    future: asyncio.Future[Decision] | None = field(default=None, repr=False)

    @property
    def tenant(self) -> str:
        return self.ticket.tenant

    @property
    def sequences(self) -> int:
        return self.ticket.sequences

    def charge_in(self, budget: Budget) -> float:
        """Budget tokens it would hold in `budget`: its cost, at least a slot per sequence."""
        return budget.charge(self.cost, self.sequences)


class FairQueue:
    def __init__(self) -> None:
        self._classes: dict[int, dict[str, deque[Waiter]]] = {}
        self.counters: dict[str, float] = {}
        self._charge: dict[tuple[int, str], float] = {}  # queued budget tokens per class and tenant
        self.length = 0

    def push(self, waiter: Waiter, serving: Iterable[str] = (), credit: float = 0.0) -> None:
        """Queue `waiter`; `serving` names the tenants holding capacity now, and `credit` how
        far (in counter units) its tenant may stay behind them when its line starts."""
        tenants = self._classes.setdefault(waiter.priority, {})
        line = tenants.get(waiter.tenant)
        if line is None:
            self.lift(waiter.tenant, [*tenants, *serving], credit)
            line = tenants[waiter.tenant] = deque()
        line.append(waiter)
        self.length += 1
        key = (waiter.priority, waiter.tenant)
        self._charge[key] = self._charge.get(key, 0.0) + waiter.charge

    def remove(self, waiter: Waiter) -> bool:
        tenants = self._classes.get(waiter.priority, {})
        line = tenants.get(waiter.tenant)
        if line is None or waiter not in line:
            return False
        line.remove(waiter)
        self.length -= 1
        if line:
            self._charge[waiter.priority, waiter.tenant] -= waiter.charge
            return True
        del tenants[waiter.tenant], self._charge[waiter.priority, waiter.tenant]
        if not tenants:
            del self._classes[waiter.priority]
        return True

    def queued(self, tenant: str) -> float:
        """Budget tokens the tenant has waiting, in every class."""
        return sum(charge for (_, name), charge in self._charge.items() if name == tenant)

    def counter(self, tenant: str) -> float:
        return self.counters.get(tenant, 0.0)

    def served(self, tenant: str, charge: float, weight: float) -> None:
        self.counters[tenant] = self.counter(tenant) + charge / weight

    def heads(self) -> Iterator[Waiter]:
        """The first waiter of each tenant, in the order they would be served."""
        for priority in sorted(self._classes):
            tenants = self._classes[priority]
            order = sorted(tenants, key=lambda name: (self.counter(name), tenants[name][0].arrived))
            for name in order:
                yield tenants[name][0]

    def lasts(self) -> Iterator[Waiter]:
        """The last waiter of each tenant in each class."""
        for tenants in self._classes.values():
            for line in tenants.values():
                yield line[-1]

    def last_of(self, priority: int, tenant: str) -> Waiter | None:
        line = self._classes.get(priority, {}).get(tenant)
        return line[-1] if line else None

    def __iter__(self) -> Iterator[Waiter]:
        for tenants in self._classes.values():
            for line in tenants.values():
                yield from line

    def charge_ahead(self, waiter: Waiter) -> float:
        """Budget tokens that will be granted before `waiter` (it must be the last of its tenant)."""
        ahead = sum(charge for (priority, _), charge in self._charge.items() if priority < waiter.priority)
        own_ahead = self._charge[waiter.priority, waiter.tenant] - waiter.charge
        # Others in the class are served until their counters pass the one this tenant
        # will have when its earlier requests are through.
        passing = self.counter(waiter.tenant) + own_ahead / waiter.weight
        for name, line in self._classes.get(waiter.priority, {}).items():
            if name != waiter.tenant:
                queued = self._charge[waiter.priority, name]
                ahead += min(queued, max(0.0, passing - self.counter(name)) * line[0].weight)
        return ahead + own_ahead

    def lift(self, tenant: str, active: Iterable[str], credit: float = 0.0) -> None:
        """Bring the tenant's counter up to `credit` below the lowest of the `active` others."""
        others = [self.counter(name) for name in active if name != tenant]
        if others:
            self.counters[tenant] = max(self.counter(tenant), min(others) - credit)
