"""The load generator's own stalls: how late its event loop wakes.

The load generator shares the machine's cores with the servers it measures. While its
event loop is held up, every answer in flight is read late by as much: a refusal the
server sent in 3 ms can be timed at 40. A ticker notes each late wake-up, so a point can
say how much of its slow answers' time was the client's own.
"""

from __future__ import annotations

import asyncio
import bisect
import time

TICK_S = 0.002
STALL_S = 0.003
"""Later than this, a wake-up counts as a stall (an idle loop wakes within ~0.1 ms)."""


class LoopLag:
    """`async with LoopLag() as lag:` notes stalls of the running loop until the block ends."""

    def __init__(self, tick_s: float = TICK_S, stall_s: float = STALL_S) -> None:
        self._tick_s, self._stall_s = tick_s, stall_s
        self.stalls: list[tuple[float, float]] = []
        """(start, end) of each stall, in `time.perf_counter` seconds, in order."""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _tick(self) -> None:
        while True:
            due = time.perf_counter() + self._tick_s
            await asyncio.sleep(self._tick_s)
            woke = time.perf_counter()
            if woke - due > self._stall_s:
                self.stalls.append((due, woke))

    def within(self, start: float, end: float) -> float:
        """Seconds of stall between `start` and `end` (perf_counter seconds)."""
        first = max(0, bisect.bisect_left(self.stalls, (start,)) - 1)
        total = 0.0
        for stall_start, stall_end in self.stalls[first:]:
            if stall_start >= end:
                break
            total += max(0.0, min(end, stall_end) - max(start, stall_start))
        return total
