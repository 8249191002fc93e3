"""One measured load: send the workload, summarise it, account the server's CPU."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.arrivals import ClosedLoop, LoadPoint
from bench.client import Endpoint, LoadRun, make_client, run_load
from bench.cpu import CpuUsage, frontend_ms_per_token, is_engine_core, sample, split, used_between
from bench.progress import Progress
from bench.stats import NO_SLO, Slo, Summary, summarise
from bench.workload import RequestSpec


@dataclass
class Measurement:
    run: LoadRun
    summary: Summary
    cpu: CpuUsage | None
    frontend_cpu_ms_per_token: float | None


async def warm_up(endpoint: Endpoint, specs: Sequence[RequestSpec], concurrency: int = 4) -> None:
    """Unmeasured requests, so first-request costs do not land in a load point."""
    if specs:
        async with make_client(endpoint) as client:
            await run_load(client, endpoint, specs, ClosedLoop(concurrency))


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No garbage-collection pauses in the load generator while it times requests: a
    full collection over a run's records takes tens of milliseconds, which would land in
    whichever requests were in flight. Records are freed by reference counting meanwhile;
    cycles wait for the collection afterwards."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def measure(endpoint: Endpoint, specs: Sequence[RequestSpec], load: LoadPoint,
                  slo: Slo = NO_SLO, cpu_pids: Sequence[int] = (), label: str = "",
                  is_engine: Callable[[str], bool] = is_engine_core) -> Measurement:
    """Run `specs` at `load`; with `cpu_pids`, CPU of those process trees is sampled around it."""
    progress = Progress(len(specs), label or load.label)
    before = sample(cpu_pids) if cpu_pids else None
    with collector_paused():
        async with make_client(endpoint) as client:
            run = await run_load(client, endpoint, specs, load, lambda r: progress.advance(r.ok))
    after = sample(cpu_pids) if cpu_pids else None
    progress.close()
    summary = summarise(run.results, run.wall_s, slo)
    cpu = split(used_between(before, after), is_engine) if before is not None and after else None
    per_token = frontend_ms_per_token(cpu, summary.output_tokens) if cpu else None
    return Measurement(run, summary, cpu, per_token)


def append_requests(path: Path, tags: dict[str, object], run: LoadRun) -> None:
    """Every request's raw record, one JSON line each, for later analysis."""
    with path.open("a") as file:
        for result in run.results:
            file.write(json.dumps({**tags, **asdict(result)}) + "\n")
