"""A benchmark suite: every system at every load point, repeated, systems alternating.

Systems run one at a time and in turn (A B C A B C ...), each relaunched per
repeat, so drift of the machine over time falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.arrivals import LoadPoint
from bench.client import Endpoint
from bench.launcher import LaunchError, Running, launch, stop, wait_first_completion, wait_ready
from bench.markdown import report
from bench.measure import append_requests, measure, warm_up
from bench.plots import plot
from bench.results import Load, RunResult, SuiteResult
from bench.stats import Slo
from bench.systems import EngineSettings, Model, System, make_system
from bench.workload import RequestSpec, Workload

SystemFactory = Callable[[str, Model, EngineSettings, Path | None], System]


@dataclass
class SuiteOptions:
    systems: list[str]
    model: Model
    loads: list[LoadPoint]
    out: Path
    workload: Workload = Workload()
    engine: EngineSettings = EngineSettings()
    repeats: int = 1
    slo: Slo = field(default_factory=Slo)
    baseline: str | None = None
    app_config: Path | None = None
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 300.0
    warmup_requests: int = 8
    launch_timeout_s: float = 900.0
    ray_stop: bool = True
    """Run `ray stop --force` after a Ray system; off when other Ray work shares the machine."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_outputs(suite: SuiteResult, out: Path, plots: bool = True) -> None:
    """results.json, results.md and (with `plots`) latency.png and throughput.png."""
    out.mkdir(parents=True, exist_ok=True)
    suite.save(out / "results.json")
    (out / "results.md").write_text(report(suite))
    if plots and suite.runs:
        plot(suite, out)


def _endpoint(options: SuiteOptions, running: Running) -> Endpoint:
    return Endpoint(running.base_url, options.api_key, options.headers, options.timeout_s)


async def _measure_loads(options: SuiteOptions, running: Running, specs: Sequence[RequestSpec],
                         repeat: int, suite: SuiteResult) -> None:
    endpoint = _endpoint(options, running)
    await warm_up(endpoint, specs[: options.warmup_requests])
    for load in options.loads:
        label = f"{running.system.name} r{repeat} {load.label}"
        measured = await measure(endpoint, specs, load, options.slo, [running.pid], label)
        suite.runs.append(RunResult(system=running.system.name, load=Load.of(load), repeat=repeat,
                                    stream=options.workload.stream, summary=measured.summary,
                                    cpu=measured.cpu,
                                    frontend_cpu_ms_per_token=measured.frontend_cpu_ms_per_token))
        append_requests(options.out / "requests.jsonl",
                        {"system": running.system.name, "load": load.label, "repeat": repeat},
                        measured.run)
        s = measured.summary
        _say(f"{label}: {s.output_tokens_per_s:.1f} tok/s, {s.succeeded}/{s.requests} ok, "
             f"failures {s.failures or 0}")


def _run_system(options: SuiteOptions, system: System, repeat: int,
                specs: Sequence[RequestSpec], suite: SuiteResult) -> None:
    name = system.name
    record = suite.system(name)
    _say(f"starting {name} (repeat {repeat})")
    running = launch(system, options.out / "logs", options.headers | _auth(options.api_key))
    try:
        record.ready_s.append(wait_ready(running, options.launch_timeout_s))
        record.cold_start_s.append(wait_first_completion(running, options.launch_timeout_s))
        _say(f"{name} ready in {record.ready_s[-1]:.1f} s, first completion at "
             f"{record.cold_start_s[-1]:.1f} s")
        asyncio.run(_measure_loads(options, running, specs, repeat, suite))
    except LaunchError as error:
        record.errors.append(str(error).splitlines()[0])
        _say(str(error))
    finally:
        stop(running, ray_stop=options.ray_stop)


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def run_suite(options: SuiteOptions, make: SystemFactory = make_system) -> SuiteResult:
    """Run the suite; `make` turns a system name into how to start it."""
    suite = SuiteResult(created=time.strftime("%Y-%m-%d %H:%M:%S"), model=options.model.name,
                        settings=_settings(options), baseline=options.baseline)
    specs = options.workload.specs(options.model.name)
    for repeat in range(options.repeats):
        for name in options.systems:
            system = make(name, options.model, options.engine, options.app_config)
            _run_system(options, system, repeat, specs, suite)
            # After every system, so that a crash keeps what was measured.
            write_outputs(suite, options.out, plots=False)
    write_outputs(suite, options.out)
    return suite


def _settings(options: SuiteOptions) -> dict[str, object]:
    workload = options.workload
    return {"workload": workload.kind, "requests": workload.requests,
            "input_tokens": workload.input_tokens, "output_tokens": workload.output_tokens,
            **({"prefix_tokens": workload.prefix_tokens} if workload.kind == "shared-prefix" else {}),
            "stream": workload.stream, "seed": workload.seed, "repeats": options.repeats,
            "systems": ",".join(options.systems), "engine": options.engine.kwargs(),
            "slo_ttft_s": options.slo.ttft_s, "slo_tpot_s": options.slo.tpot_s}
