"""A router's memory of the controller's latest overload refusals, per tenant line.

When the controller refuses a request because it could not start before its
deadline, it says for how long a request like it would be refused the same way
(`Decision.alike_refused_for_s`): the later a request of that tenant and class
arrives, the later its deadline, so the refusal holds until the margin by which
it missed is used up. Within that time the router answers a request of the same
model, tenant and requested class, no smaller, from memory: same outcome,
message and Retry-After (counted down), without the round trip to the controller
that a flooding tenant would otherwise cost on every request. Another tenant
never meets this tenant's memo, so fair shares are untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from serve_app.outcomes import Decision, Ticket

MAX_ENTRIES = 4096  # tenant lines remembered at once; expired ones are dropped first


@dataclass(frozen=True)
class Memo:
    decision: Decision
    refused: Ticket
    noted_at: float
    until: float

    def covers(self, ticket: Ticket, now: float) -> bool:
        """Whether `ticket` asks for no less than the refused one did."""
        refused = self.refused
        return now < self.until and ticket.prompt_tokens >= refused.prompt_tokens \
            and ticket.max_tokens >= refused.max_tokens and ticket.sequences >= refused.sequences


Line = tuple[str, str, str | None]
"""Model, tenant and requested priority class: what decides a request's place in line."""


class RefusalMemo:
    def __init__(self, longest_s: float, clock: Callable[[], float]) -> None:
        self._longest_s = longest_s
        self._clock = clock
        self._memos: dict[Line, Memo] = {}

    def note(self, ticket: Ticket, decision: Decision) -> None:
        hold_s = min(decision.alike_refused_for_s or 0.0, self._longest_s)
        if hold_s <= 0.0:
            return
        now = self._clock()
        if len(self._memos) >= MAX_ENTRIES:
            self._forget_expired(now)
        if len(self._memos) < MAX_ENTRIES:
            self._memos[_line(ticket)] = Memo(decision, ticket, now, now + hold_s)

    def recall(self, ticket: Ticket) -> Decision | None:
        """The refusal a request like `ticket` would get now, if the memo still holds."""
        memo = self._memos.get(_line(ticket))
        if memo is None:
            return None
        now = self._clock()
        if not memo.covers(ticket, now):
            return None
        retry_after_s = memo.decision.retry_after_s
        if retry_after_s is not None:
            retry_after_s = max(0.0, retry_after_s - (now - memo.noted_at))
        return dataclasses.replace(memo.decision, retry_after_s=retry_after_s, alike_refused_for_s=None)

    def _forget_expired(self, now: float) -> None:
        self._memos = {line: memo for line, memo in self._memos.items() if memo.until > now}


def _line(ticket: Ticket) -> Line:
    return ticket.model, ticket.tenant, ticket.priority_class
