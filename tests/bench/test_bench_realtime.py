"""The load generator's real-time priority: on while it measures, never passed on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.realtime import realtime

CHILD_POLICY = [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"]


def test_asking_for_nothing_changes_nothing() -> None:
    before = os.sched_getscheduler(0)
    with realtime(None) as applied:
        assert applied is False
        assert os.sched_getscheduler(0) == before


def test_the_thread_runs_fifo_inside_the_block_and_as_before_after_it() -> None:
    before = os.sched_getscheduler(0)
    with realtime(10) as applied:
        if not applied:
            pytest.skip("this user may not ask for a real-time policy (no CAP_SYS_NICE)")
        assert os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO
        assert os.sched_getparam(0).sched_priority == 10
    assert os.sched_getscheduler(0) == before


def test_processes_started_inside_the_block_run_at_the_normal_policy() -> None:
    with realtime(10) as applied:
        if not applied:
            pytest.skip("this user may not ask for a real-time policy (no CAP_SYS_NICE)")
        child = subprocess.run(CHILD_POLICY, capture_output=True, text=True, check=True)
    assert int(child.stdout) == os.SCHED_OTHER
