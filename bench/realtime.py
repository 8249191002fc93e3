"""The load generator at a real-time priority while it measures.

Where the load generator shares its cores with the servers it measures, the fair
scheduler lets any of them hold the core while an answer waits to be read: a refusal the
router sent in 3 ms is timed at 40 (`LoopLag` notes these stalls). Under SCHED_FIFO the
load generator runs as soon as it has work, as a client on its own machine would, and
still uses only the CPU it did before. SCHED_RESET_ON_FORK keeps every process and thread
it starts (the servers under test among them) at the normal policy, and the kernel's
real-time throttling leaves the others 5% of the core should it ever spin.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

PRIORITY = 10


@contextlib.contextmanager
def realtime(priority: int | None = PRIORITY) -> Iterator[bool]:
    """Runs the calling thread under SCHED_FIFO at `priority` until the block ends; yields
    whether it does (None asks for nothing; without CAP_SYS_NICE or an RLIMIT_RTPRIO the
    kernel refuses and the thread keeps its policy)."""
    if priority is None:
        yield False
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except PermissionError:
        yield False
        return
    try:
        yield True
    finally:
        os.sched_setscheduler(0, policy, param)
