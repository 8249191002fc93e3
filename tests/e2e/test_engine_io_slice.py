"""On the running stack, the vLLM engine core's socket threads run with the short slice
the replica asked for (serve_app/engines/io_slice.py); its step thread keeps the kernel's."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.engines import io_slice
from tests.e2e.serve_process import engine_core_pid
from tests.e2e.stack import Stack

SHORT_NS = io_slice.DEFAULT_US * 1000


def thread_slices(pid: int) -> dict[int, tuple[str, int | None]]:
    tasks = Path(f"/proc/{pid}/task")
    return {int(task.name): ((task / "comm").read_text().strip(), io_slice.thread_slice(int(task.name)))
            for task in tasks.iterdir()}


def test_the_engine_cores_socket_threads_preempt_its_step_thread(stack: Stack):
    if io_slice.thread_slice() in (None, SHORT_NS):
        pytest.skip("no per-thread fair-scheduling slice on this kernel")
    engine_core = engine_core_pid()
    slices = thread_slices(engine_core)
    zeromq_io = [slice_ns for name, slice_ns in slices.values() if name.startswith("ZMQbg/IO")]
    short = [tid for tid, (_, slice_ns) in slices.items() if slice_ns == SHORT_NS]
    assert zeromq_io and set(zeromq_io) == {SHORT_NS}, slices
    assert len(short) >= 2 + len(zeromq_io), slices  # the input and output threads too
    assert slices[engine_core][1] != SHORT_NS, slices
