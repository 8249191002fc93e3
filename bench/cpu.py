"""CPU seconds of process trees, read from /proc, split by process.

A sample taken before and one after a run give each process's CPU time during
the run; `split` then divides it between the engine and the front end (HTTP,
routing, streaming) with a predicate on the process name.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

PROC = Path("/proc")
ProcessKey = tuple[int, int]
"""(pid, start time in ticks): a pid alone may be reused by a later process."""


@dataclass(frozen=True)
class ProcessCpu:
    pid: int
    ppid: int
    start_ticks: int
    name: str
    cpu_s: float
    """utime + stime of the process itself so far."""

    @property
    def key(self) -> ProcessKey:
        return (self.pid, self.start_ticks)


class CpuUsage(BaseModel):
    """CPU seconds a system used during a run."""

    by_name: dict[str, float]
    engine_s: float
    frontend_s: float

    @property
    def total_s(self) -> float:
        return self.engine_s + self.frontend_s


def parse_stat(text: str, name: str, ticks_per_s: float) -> ProcessCpu:
    """One /proc/<pid>/stat line; `name` is what the process is called in reports."""
    # The command in parentheses may itself hold spaces and parentheses.
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # `rest` starts at field 3 (state); utime and stime are fields 14 and 15, starttime 22.
    utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
    return ProcessCpu(pid=pid, ppid=int(fields[1]), start_ticks=start, name=name,
                      cpu_s=(utime + stime) / ticks_per_s)


def process_name(cmdline: bytes, comm: str) -> str:
    """A short, stable name: a process title ("VLLM::EngineCore", "ray::ServeReplica:..."),
    the module of `python -m`, the script of `python x.py`, or the executable."""
    args = [arg.decode(errors="replace") for arg in cmdline.split(b"\0") if arg]
    if not args:
        return comm
    if "::" in args[0]:
        return args[0].split()[0]
    executable = os.path.basename(args[0].split()[0])
    if executable.startswith("python"):
        return _python_target(args[1:]) or executable
    return executable


def _python_target(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg == "-m" and index + 1 < len(args):
            return args[index + 1]
        if arg == "-c":
            return "python -c"
        if not arg.startswith("-"):
            return os.path.basename(arg)
    return None


def read_process(pid: int, proc: Path = PROC) -> ProcessCpu | None:
    """The process's CPU so far, or None if it has gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    comm = stat[stat.find("(") + 1: stat.rfind(")")]
    return parse_stat(stat, process_name(cmdline, comm), _ticks_per_s())


def _ticks_per_s() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def all_processes(proc: Path = PROC) -> list[ProcessCpu]:
    found = (read_process(int(entry.name), proc) for entry in proc.iterdir() if entry.name.isdigit())
    return [process for process in found if process is not None]


def trees(roots: Iterable[int], processes: Iterable[ProcessCpu]) -> list[ProcessCpu]:
    """The root processes and all their descendants."""
    processes = list(processes)
    children: dict[int, list[ProcessCpu]] = defaultdict(list)
    for process in processes:
        children[process.ppid].append(process)
    by_pid = {process.pid: process for process in processes}
    found: dict[int, ProcessCpu] = {}
    stack = [by_pid[pid] for pid in roots if pid in by_pid]
    while stack:
        process = stack.pop()
        if process.pid not in found:
            found[process.pid] = process
            stack.extend(children[process.pid])
    return list(found.values())


def sample(roots: Iterable[int], proc: Path = PROC) -> dict[ProcessKey, ProcessCpu]:
    """CPU so far of every process in the trees under `roots`."""
    return {process.key: process for process in trees(roots, all_processes(proc))}


def used_between(before: Mapping[ProcessKey, ProcessCpu],
                 after: Mapping[ProcessKey, ProcessCpu]) -> dict[str, float]:
    """CPU seconds each process name used between two samples; processes that started
    in between count in full. Processes that ended in between are lost to /proc."""
    used: dict[str, float] = defaultdict(float)
    for key, process in after.items():
        previous = before.get(key)
        used[process.name] += process.cpu_s - (previous.cpu_s if previous else 0.0)
    return dict(used)


def is_engine_core(name: str) -> bool:
    """vLLM's engine-core processes and the model workers they drive (on CPU the model
    runs in a worker process); its API-server and coordinator processes are front end."""
    return name.startswith(("VLLM::EngineCore", "VLLM::Worker"))


def split(by_name: Mapping[str, float], is_engine: Callable[[str], bool] = is_engine_core) -> CpuUsage:
    """Divide CPU seconds by process name between the engine and everything else."""
    engine = sum(seconds for name, seconds in by_name.items() if is_engine(name))
    frontend = sum(seconds for name, seconds in by_name.items() if not is_engine(name))
    return CpuUsage(by_name=dict(by_name), engine_s=engine, frontend_s=frontend)


def frontend_ms_per_token(usage: CpuUsage, output_tokens: int) -> float | None:
    """Front-end CPU milliseconds spent per streamed output token."""
    return 1000.0 * usage.frontend_s / output_tokens if output_tokens else None
