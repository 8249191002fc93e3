"""A short scheduler slice for the engine core's socket threads.

vLLM's engine core runs each step on its main thread and hands the step's outputs
to an output thread, which serialises them and sends them (through ZeroMQ's own I/O
thread) to the replica. When those threads share a core with the step's compute, as
on a CPU replica whose engine is pinned to its cores, Linux's fair scheduler lets the
main thread run out its slice (1.4 ms on 2 cores) before the woken output thread
gets the core, and the token waits for the next step's compute. Since Linux 6.12 a
thread may ask for a shorter slice (sched_setattr's sched_runtime, no privilege
needed), and a woken thread with a shorter slice preempts the running one.

Loaded in every vLLM process as a vLLM general plugin (entry point in pyproject), so
it reaches engine cores that are forked from the replica and those that are spawned.
It acts only where the replica asked for it through the environment (`engine_env`):
a vLLM server that is not ours, started from the same environment, is left alone.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import struct
from collections.abc import Callable
from typing import Any

ENV = "SERVE_APP_ENGINE_IO_SLICE_US"
DEFAULT_US = 100
SOCKET_THREADS = ("process_input_sockets", "process_output_sockets")
SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
SCHED_GETATTR = {"x86_64": 315, "aarch64": 275}
SCHED_ATTR = "IIQiIQQQ"  # size, policy, flags, nice, priority, runtime, deadline, period
SCHED_OTHER = 0


def register() -> None:
    """vLLM general plugin: give the engine core's socket threads the configured slice."""
    slice_us = int(os.environ.get(ENV) or 0)
    if slice_us <= 0 or platform.system() != "Linux":
        return
    from vllm.v1.engine.core import EngineCoreProc

    for name in SOCKET_THREADS:
        method = getattr(EngineCoreProc, name)
        if not getattr(method, "_short_slice", False):
            setattr(EngineCoreProc, name, with_short_slice(method, slice_us * 1000))


def with_short_slice(thread_body: Callable[..., Any], slice_ns: int) -> Callable[..., Any]:
    """`thread_body`, first setting the slice of the thread that runs it; the threads it
    starts (ZeroMQ's I/O thread among them) inherit that slice."""

    @functools.wraps(thread_body)
    def body(*args: Any, **kwargs: Any) -> Any:
        set_thread_slice(slice_ns)
        return thread_body(*args, **kwargs)

    body._short_slice = True  # type: ignore[attr-defined]
    return body


def set_thread_slice(slice_ns: int, tid: int = 0) -> bool:
    """Ask the kernel for `slice_ns` as the fair-scheduling slice of thread `tid` (0: the
    calling thread). False where the kernel or the machine cannot; kernels before 6.12
    accept the call and keep their own slice."""
    number = SCHED_SETATTR.get(platform.machine())
    if number is None:
        return False
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    attr = ctypes.create_string_buffer(
        struct.pack(SCHED_ATTR, struct.calcsize(SCHED_ATTR), SCHED_OTHER, 0, nice, 0, slice_ns, 0, 0))
    return _libc().syscall(number, tid, attr, 0) == 0


def thread_slice(tid: int = 0) -> int | None:
    """The slice thread `tid` runs with, in ns (None where it cannot be read)."""
    number = SCHED_GETATTR.get(platform.machine())
    if number is None:
        return None
    size = struct.calcsize(SCHED_ATTR)
    attr = ctypes.create_string_buffer(size)
    if _libc().syscall(number, tid, attr, size, 0) != 0:
        return None
    return struct.unpack(SCHED_ATTR, attr.raw)[5]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
