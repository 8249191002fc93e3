"""The load generator's stall detector, specified."""

from __future__ import annotations

import asyncio
import time

from bench.loop_lag import LoopLag


async def test_a_blocked_loop_is_noted_as_a_stall_and_an_idle_one_is_not():
    async with LoopLag() as lag:
        await asyncio.sleep(0.05)
        quiet = list(lag.stalls)
        blocked_at = time.perf_counter()
        time.sleep(0.03)  # holds the loop, as a busy client would
        await asyncio.sleep(0.01)
    assert not quiet or max(end - start for start, end in quiet) < 0.02  # an idle loop wakes on time
    assert lag.within(blocked_at, blocked_at + 0.03) > 0.02


def test_stall_time_is_counted_only_where_it_overlaps():
    lag = LoopLag()
    lag.stalls = [(1.0, 1.1), (2.0, 2.05), (3.0, 3.2)]
    assert abs(lag.within(1.05, 2.02) - 0.07) < 1e-9
    assert lag.within(1.2, 1.9) == 0.0
    assert abs(lag.within(0.0, 10.0) - 0.35) < 1e-9
