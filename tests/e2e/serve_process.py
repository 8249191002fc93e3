"""Run `make serve` / the CLI as a user would: a separate process with its own Ray."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.stack import ROOT, free_port, wait_until_ready


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def descendants_titled(pid: int, title: str) -> list[int]:
    """Processes under `pid` whose command line (process title) contains `title`."""
    return [child for child in descendants(pid) if title in cmdline(child)]


def engine_core_pid() -> int:
    """The one vLLM engine-core process under this one (the shared stack's replica's)."""
    cores = descendants_titled(os.getpid(), "VLLM::EngineCore")
    assert len(cores) == 1, cores
    return cores[0]


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@contextlib.contextmanager
def serving(command: list[str], log: Path, ready_timeout_s: float = 400.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start `command` (which must accept PORT / --port) and stop it with Ctrl-C."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, ready_timeout_s)
        yield base_url, process
    finally:
        stop(process)


def stop(process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout_s)  # reap it, or the group stays "alive" as a zombie
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
        raise AssertionError(f"{process.args} did not stop within {timeout_s}s of Ctrl-C")
