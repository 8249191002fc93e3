"""Admission under overload: goodput, SLO and refusal latency at 0.5x-4x capacity, fairness
between a flooding and a light tenant, and the controller's per-request overhead.

    python -m bench overload --engine simulated --runs overload,fairness,overhead
    python -m bench overload --engine vllm --model models/tiny-llama --runs overload

Each run launches the app (`python -m serve_app.cli serve`) with admission on and
again with it off, on a loopback port, and stops it afterwards without touching any
other Ray instance. Capacity (1x) is measured first: the throughput of a closed loop
that keeps every sequence slot busy and work queued. Load is open-loop Poisson.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.arrivals import ClosedLoop, OpenLoop
from bench.client import Endpoint, RequestResult
from bench.launcher import Running, launch, stop, wait_first_completion
from bench.loop_lag import LoopLag
from bench.measure import append_requests, measure, warm_up
from bench.realtime import PRIORITY, realtime
from bench.stats import Slo, meets, percentile, summarise
from bench.systems import LOCAL_CONFIG, App, EngineSettings, Model
from bench.workload import fixed_lengths

KEYS = {"bench": "sk-bench-overload", "tenant-a": "sk-tenant-a", "tenant-b": "sk-tenant-b"}
MULTIPLES = (0.5, 1.0, 2.0, 4.0)
IDLE_WINDOW_S = 5.0  # the controller's CPU with no calls, measured before each point
DRAIN_S = 5.0
LEAD_S = 10.0  # fairness: B runs alone this long before A starts
LIGHT_SEED = 9  # fairness: B's arrivals, the same alone and with A


@dataclass(frozen=True)
class Engine:
    """What serves and how it is loaded."""

    name: str
    model: str
    models_entry: dict[str, Any]
    input_tokens: int
    output_tokens: int
    slots: int
    """Sequences served at once: the closed loop that measures capacity keeps them busy."""
    ttft_slo_s: float
    burst_fraction: float = 0.0
    """Admission's share of the engine's slots kept for the bursts of tenants granted below their share."""


def simulated_engine(max_batch: int = 32, step_s: float = 0.06, per_seq_s: float = 0.0002,
                     output_tokens: int = 32, slo_s: float = 1.0) -> Engine:
    entry = {"name": "sim", "source": "simulated", "engine": "simulated", "limits": {"max_output_tokens": 1024},
             "simulated": {"prefill_tokens_per_s": 20000, "decode_step_base_s": step_s,
                           "decode_step_per_seq_s": per_seq_s, "max_batch": max_batch,
                           "kv_tokens": 524288, "max_model_len": 4096},
             "resources": {"num_cpus": 0.2},
             "autoscaling": {"min_replicas": 1, "max_replicas": 1, "max_ongoing_requests": 8192}}
    return Engine("simulated", "sim", entry, 64, output_tokens, max_batch, slo_s)


def vllm_engine(model_path: str, max_num_seqs: int, output_tokens: int, slo_s: float,
                engine_cores: str | None = None, input_tokens: int = 64,
                engine_args: dict[str, Any] | None = None) -> Engine:
    entry = yaml.safe_load(LOCAL_CONFIG.read_text())["models"][0]
    if engine_cores is not None:  # e.g. "1": the engine computes there, the front end has the rest
        entry["parallelism"] = {**entry.get("parallelism", {}), "cpu_thread_binding": engine_cores}
    settings = EngineSettings(max_num_seqs=max_num_seqs, kv_cache_memory_bytes=1 << 30)
    entry.update(name="tiny-llama", source=str(Path(model_path).resolve()),
                 engine_args={**settings.kwargs(), **(engine_args or {})})
    entry["env"] = {k: v for k, v in entry.get("env", {}).items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    entry["autoscaling"] = {**entry["autoscaling"], "max_ongoing_requests": 8192}
    return Engine("vllm", "tiny-llama", entry, input_tokens, output_tokens, max_num_seqs, slo_s)


def with_burst_slots(engine: Engine, burst_slots: int) -> Engine:
    """The engine with `burst_slots` more sequence slots, kept by admission for the bursts of
    tenants granted below their share: the fair shares keep the slots they had."""
    if not burst_slots:
        return engine
    entry = copy.deepcopy(engine.models_entry)
    settings = entry["simulated"] if engine.name == "simulated" else entry["engine_args"]
    key = "max_batch" if engine.name == "simulated" else "max_num_seqs"
    settings[key] = engine.slots + burst_slots
    return dataclasses.replace(engine, models_entry=entry,
                               burst_fraction=burst_slots / (engine.slots + burst_slots))


def engine_arg(text: str) -> tuple[str, Any]:
    """"max_num_batched_tokens=256" -> ("max_num_batched_tokens", 256)."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def app_config(engine: Engine, admission_on: bool, ingress: str = "haproxy") -> dict[str, Any]:
    from serve_app.auth import key_hash
    from serve_app.config import load_config

    return {
        "models": [engine.models_entry],
        "router": {"replicas": 1, "num_cpus": 0.2, "max_ongoing_requests": 8192},
        "auth": {"keys": [{"sha256": key_hash(key), "tenant": tenant} for tenant, key in KEYS.items()],
                 "keys_env": None},
        "admission": {"enabled": admission_on, "num_cpus": 0.05, "max_queued": 8192,
                      "burst_fraction": engine.burst_fraction,
                      "classes": {"default": {"ttft_slo_s": engine.ttft_slo_s}},
                      "tenants": [{"name": name} for name in KEYS]},
        "http": {"host": "127.0.0.1", "port": 8000, "ingress": ingress, "drain_period_s": 2,
                 "haproxy_threads": load_config(LOCAL_CONFIG).http.haproxy_threads},
    }


@contextlib.contextmanager
def serving(engine: Engine, admission_on: bool, out: Path, ingress: str = "haproxy") -> Iterator[Running]:
    path = out / f"{engine.name}-admission-{'on' if admission_on else 'off'}.yaml"
    path.write_text(yaml.safe_dump(app_config(engine, admission_on, ingress), sort_keys=False))
    system = App(f"app-{'on' if admission_on else 'off'}", Model(engine.model, engine.model), config=path)
    running = launch(system, out / "logs", headers={"Authorization": f"Bearer {KEYS['bench']}"})
    try:
        wait_first_completion(running, timeout_s=900)
        yield running
    finally:
        stop(running, ray_stop=False)  # never `ray stop --force`: other Ray instances share the machine


@dataclass
class Point:
    """One measured load point, in the terms of the acceptance criteria."""

    label: str
    rate: float
    sent: int
    ok: int
    goodput_rps: float
    admitted_ttft_p50_s: float | None
    admitted_ttft_p99_s: float | None
    refused: dict[str, int] = field(default_factory=dict)
    refusal_p50_s: float | None = None
    refusal_p99_s: float | None = None
    other_failures: dict[str, int] = field(default_factory=dict)
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    """CPU of the app's processes (by name) per request sent, when accounted."""
    refused_codes: dict[str, int] = field(default_factory=dict)
    """Refusals by the error code in their body (e.g. overloaded, queue_timeout)."""
    load_average: float | None = None
    """The machine's 1-minute load average when the point ended: other work shares the cores."""
    refusal_p99_net_s: float | None = None
    """Refusal p99 less the load generator's own stalls while each was in flight (`LoopLag`)."""
    client_stall_s: float | None = None
    """Seconds the load generator's event loop was held up during the point."""
    refusal_router_p99_s: float | None = None
    """Refusal p99 inside the router, from its `Server-Timing`: the rest is the way there and back."""


def point(label: str, rate: float, results: list[RequestResult], summary: Any, slo: Slo) -> Point:
    refusals = [r for r in results if r.failure in ("429", "503")]
    others: dict[str, int] = {}
    for r in results:
        if r.failure and r.failure not in ("429", "503"):
            others[r.failure] = others.get(r.failure, 0) + 1
    refused: dict[str, int] = {}
    for r in refusals:
        refused[r.failure] = refused.get(r.failure, 0) + 1
    times = [r.e2e_s for r in refusals if r.e2e_s is not None]
    # Goodput over the time requests were sent, not until the last backlog drained.
    sent_for_s = max(r.start_s for r in results) + 1.0 / rate
    goodput = sum(meets(r, slo) for r in results) / sent_for_s
    in_router = [r.router_s for r in refusals if r.router_s is not None]
    return Point(label, rate, len(results), summary.succeeded, goodput, summary.ttft_s.p50,
                 summary.ttft_s.p99, refused, percentile(times, 50), percentile(times, 99), others,
                 refused_codes=dict(Counter(_code(r.error) for r in refusals)),
                 refusal_router_p99_s=percentile(in_router, 99))


def client_share(lag: LoopLag, started_at: float, results: list[RequestResult]) -> tuple[float | None, float]:
    """Refusal p99 net of the load generator's stalls while each refusal was in flight, and
    the stalls' total over the point (`started_at`: perf_counter time of `start_s` 0)."""
    net = [max(0.0, r.e2e_s - lag.within(started_at + r.start_s, started_at + r.start_s + r.e2e_s))
           for r in results if r.failure in ("429", "503") and r.e2e_s is not None]
    first = started_at + min((r.start_s for r in results), default=0.0)
    return percentile(net, 99), round(lag.within(first, float("inf")), 3)


def _code(error: str | None) -> str:
    try:
        return str(json.loads(error or "")["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "?"


def endpoint(base_url: str, tenant: str, timeout_s: float) -> Endpoint:
    return Endpoint(base_url, api_key=KEYS[tenant], timeout_s=timeout_s)


def specs(engine: Engine, count: int, seed: int) -> list:
    return fixed_lengths(engine.model, count, engine.input_tokens, engine.output_tokens, stream=True, seed=seed)


async def capacity_rps(base_url: str, engine: Engine, requests: int) -> float:
    """Requests/s the model completes when it never lacks work: a closed loop of twice its
    sequence slots keeps every slot busy and a queue waiting (with admission off). Counting
    only `slots` clients would underrate an engine whose slots idle between a request's
    end and the next one's prefill."""
    run = await measure(endpoint(base_url, "bench", 120), specs(engine, requests, 1), ClosedLoop(2 * engine.slots))
    return run.summary.requests_per_s


async def open_loop(base_url: str, engine: Engine, tenant: str, rate: float, duration_s: float,
                    timeout_s: float, seed: int, label: str, cpu_pid: int | None = None,
                    after_s: float = 0.0, record: Path | None = None) -> Point:
    """Poisson load for `duration_s`; the point counts the requests sent after `after_s`."""
    count = max(1, round(rate * duration_s))
    slo = Slo(ttft_s=engine.ttft_slo_s)
    client_cpu_s = time.process_time()
    async with LoopLag() as lag:
        measured = await measure(endpoint(base_url, tenant, timeout_s), specs(engine, count, seed),
                                 OpenLoop(rate, seed=seed), slo, [cpu_pid] if cpu_pid else (), label=label)
    client_cpu_s = time.process_time() - client_cpu_s
    if record is not None:
        append_requests(record, {"point": label}, measured.run)
    results = [r for r in measured.run.results if r.start_s >= after_s]
    for r in results:
        r.start_s -= after_s
    found = point(label, rate, results, summarise(results, measured.run.wall_s, slo), slo)
    found.load_average = round(os.getloadavg()[0], 1)
    found.refusal_p99_net_s, found.client_stall_s = client_share(lag, measured.run.started_at + after_s, results)
    if measured.cpu is not None:
        per_request: dict[str, float] = {}
        for name, seconds in measured.cpu.by_name.items():
            per_request[_short(name)] = per_request.get(_short(name), 0.0) + 1000 * seconds / count
        per_request["load generator"] = 1000 * client_cpu_s / count
        found.cpu_ms_per_request = {name: round(ms, 3) for name, ms in per_request.items() if ms >= 0.01}
    return found


def _short(process: str) -> str:
    # A Ray worker's title names the task it is running ("...Router.handle_request"): keep the actor.
    return process.removeprefix("ray::ServeReplica:llm:").split(".")[0]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def settle(args: argparse.Namespace) -> None:
    """Wait (a while) for other work on the machine to calm down: the cores are shared."""
    deadline = time.monotonic() + args.settle_timeout
    while os.getloadavg()[0] > args.settle_load and time.monotonic() < deadline:
        await asyncio.sleep(5)


async def overload_points(app: Running, engine: Engine, capacity: float, args: argparse.Namespace,
                          mode: str, record: Path) -> list[Point]:
    """Each load point in turn; every request's record is appended to `record`."""
    points = []
    for multiple in args.multiples:
        await settle(args)
        label = f"{mode} {multiple:g}x"
        points.append(await open_loop(app.base_url, engine, "bench", capacity * multiple, args.duration,
                                      args.timeout, seed=int(multiple * 10), label=label, cpu_pid=app.pid,
                                      record=record))
        say(json.dumps(asdict(points[-1])))
        await asyncio.sleep(DRAIN_S)
    return points


async def fairness_points(base_url: str, engine: Engine, capacity: float,
                          args: argparse.Namespace, record: Path | None = None) -> list[Point]:
    share = capacity / 2  # two tenants of equal weight
    await asyncio.sleep(12)  # earlier load's tenant leaves the fair-share window: B starts alone
    await settle(args)
    # Alone, B sends exactly what it sends with A (same seed, same lead): a p99 over a few
    # dozen requests is its largest burst, so two arrival sequences would compare bursts.
    alone = await open_loop(base_url, engine, "tenant-b", 0.5 * share, LEAD_S + args.duration, args.timeout,
                            LIGHT_SEED, "B alone at 0.5x share", after_s=LEAD_S, record=record)
    say(json.dumps(asdict(alone)))
    await asyncio.sleep(DRAIN_S)
    await settle(args)
    # B keeps sending; A starts flooding once B has been at it for a while, as in service.
    light = asyncio.ensure_future(open_loop(base_url, engine, "tenant-b", 0.5 * share, LEAD_S + args.duration,
                                            args.timeout, LIGHT_SEED, "B at 0.5x share, with A", after_s=LEAD_S,
                                            record=record))
    await asyncio.sleep(LEAD_S)
    flood = await open_loop(base_url, engine, "tenant-a", 10 * share, args.duration, args.timeout, 8,
                            "A at 10x share", record=record)
    light = await light
    say(json.dumps(asdict(flood)))
    say(json.dumps(asdict(light)))
    return [alone, flood, light]


def run_admission(engine: Engine, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Capacity and the overload points with admission off, then on; then fairness (on)."""
    found: dict[str, Any] = {"engine": engine.name, "slo_ttft_s": engine.ttft_slo_s,
                             "input_tokens": engine.input_tokens, "output_tokens": engine.output_tokens}
    capacity = found["capacity_rps"] = args.capacity_rps
    record = out / "requests.jsonl"
    if capacity is None or ("overload" in args.runs and "off" in args.modes):
        with serving(engine, admission_on=False, out=out, ingress=args.ingress) as app:
            asyncio.run(warm_up(endpoint(app.base_url, "bench", 120), specs(engine, 8, 99)))
            if capacity is None:
                capacity = found["capacity_rps"] = asyncio.run(
                    capacity_rps(app.base_url, engine, args.capacity_requests))
            say(f"capacity: {capacity:.2f} requests/s")
            if "overload" in args.runs and "off" in args.modes:
                found["off"] = [asdict(p) for p in
                                asyncio.run(overload_points(app, engine, capacity, args, "off", record))]
    with serving(engine, admission_on=True, out=out, ingress=args.ingress) as app:
        asyncio.run(warm_up(endpoint(app.base_url, "bench", 120), specs(engine, engine.slots, 98),
                            concurrency=engine.slots))
        if "overload" in args.runs:
            found["on"] = [asdict(p) for p in asyncio.run(overload_points(app, engine, capacity, args, "on", record))]
            time.sleep(12)  # the overload tenant's demand leaves the fair-share window
        if "fairness" in args.runs:
            found["fairness"] = [asdict(p) for p in asyncio.run(fairness_points(app.base_url, engine, capacity, args, record))]
    return found


def overhead_engine() -> Engine:
    """Far more capacity than any rate here: no request ever waits, only admission's cost shows."""
    engine = simulated_engine(max_batch=512, step_s=0.01, per_seq_s=0.00001, output_tokens=4)
    return Engine("simulated-overhead", engine.model, engine.models_entry, 16, 4, 512, 1.0)


def run_overhead(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Admission on vs off at each rate: TTFT p50 and CPU per request of every process."""
    engine = overhead_engine()
    found: dict[str, Any] = {"rates": args.overhead_rates}
    for repeat in range(args.overhead_repeats):
        for admission_on in (True, False):
            mode = "on" if admission_on else "off"
            with serving(engine, admission_on, out, args.ingress) as app:
                asyncio.run(warm_up(endpoint(app.base_url, "bench", 60), specs(engine, 200, 97), concurrency=16))
                for rate in args.overhead_rates:
                    asyncio.run(settle(args))
                    result = asyncio.run(open_loop(app.base_url, engine, "bench", rate, args.duration, args.timeout,
                                                   5 + repeat, f"overhead {mode} {rate:g}/s #{repeat}", app.pid))
                    say(json.dumps(asdict(result)))
                    found.setdefault(mode, []).append(asdict(result))
                    time.sleep(DRAIN_S)
    return found


def run_calls(args: argparse.Namespace) -> dict[str, Any]:
    """What admission adds to a request's path, at each rate: the router's admit call to a
    real AdmissionController deployment (releases batched as the router does), no HTTP
    around it, so the rate is not capped by the rest of the stack on this machine. Each
    rate runs over the admission link (what routers use) and over Serve handle calls."""
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")  # as the app runs; before Ray loads
    import ray
    from ray import serve

    from serve_app.admission import CONTROLLER_DEPLOYMENT, AdmissionController
    from serve_app.config import AdmissionConfig

    config = AdmissionConfig(classes={"default": {"ttft_slo_s": 1.0}})
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", _node_ip_address="127.0.0.1")
    try:
        serve.start(http_options={"location": "NoServer"})
        deployment = serve.deployment(AdmissionController).options(
            name=CONTROLLER_DEPLOYMENT, max_ongoing_requests=1_000_000, ray_actor_options={"num_cpus": 0.05})
        handle = serve.run(deployment.bind(config), name="calls", route_prefix=None)
        return {"rates": args.overhead_rates,
                "calls": asyncio.run(_drive_rates(handle, config, args))}
    finally:
        with contextlib.suppress(RuntimeError):  # its handle's event loop is gone by now
            serve.shutdown()
        ray.shutdown()


async def _drive_rates(handle: Any, config: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    found = []  # one event loop for all: a handle stays bound to the loop it was first used on
    for rate in args.overhead_rates:
        for direct_link in (True, False):
            await settle(args)
            path_config = config.model_copy(update={"direct_link": direct_link})
            found.append(await _drive_calls(handle, path_config, rate, args.duration))
            say(json.dumps(found[-1]))
            await asyncio.sleep(DRAIN_S)
    return found


async def _drive_calls(handle: Any, config: Any, rate: float, duration_s: float) -> dict[str, Any]:
    import random

    from serve_app.admission_gate import AdmissionGate
    from serve_app.outcomes import Ticket, Usage
    from serve_app.protocol import EngineStats

    capacity = EngineStats(kv_capacity_tokens=1 << 22, max_num_seqs=4096, max_model_len=4096)
    gate = AdmissionGate(handle, config)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    outcomes: Counter = Counter()

    async def one(n: int) -> None:
        started = time.perf_counter()
        decision = await gate.admit(Ticket("m", "bench", f"r{n}", 64, 32))
        latencies.append(time.perf_counter() - started)
        outcomes[decision.outcome.value] += 1
        loop.call_later(0.05, gate.release, decision.lease_id, Usage(64, 32), 0.01)

    await handle.report.remote("m", "replica", capacity)
    for n in range(20):  # the link connects on the first admit
        gate.release((await gate.admit(Ticket("m", "bench", f"warm{n}", 64, 32))).lease_id)
    empty = []  # the same path with nothing to do: what any Serve call costs here
    for _ in range(200):
        started = time.perf_counter()
        await handle.release_many.remote([])
        empty.append(time.perf_counter() - started)
    idle_cpu_per_s = await _controller_idle_cpu_per_s(IDLE_WINDOW_S)
    before = _controller_cpu_s()
    rng, tasks, started = random.Random(1), [], time.perf_counter()
    for n in range(int(rate * duration_s)):
        if n % max(1, int(rate / 2)) == 0:
            await handle.report.remote("m", "replica", capacity)  # as a replica does, twice a second
        tasks.append(asyncio.ensure_future(one(n)))
        await asyncio.sleep(max(0.0, started + n / rate + rng.uniform(-0.5, 0.5) / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.2)
    cpu_s = _controller_cpu_s() - before
    busy_cpu_s = cpu_s - idle_cpu_per_s * (time.perf_counter() - started)
    return {"rate": rate, "path": "link" if config.direct_link else "handle",
            "calls": len(latencies), "outcomes": dict(outcomes),
            "admit_p50_ms": 1000 * percentile(latencies, 50), "admit_p90_ms": 1000 * percentile(latencies, 90),
            "admit_p99_ms": 1000 * percentile(latencies, 99),
            "empty_call_p50_ms": 1000 * percentile(empty, 50),
            "controller_cpu_ms_per_request": 1000 * cpu_s / max(1, len(latencies)),
            "controller_busy_cpu_ms_per_request": 1000 * busy_cpu_s / max(1, len(latencies)),
            "load_average": round(os.getloadavg()[0], 1)}


async def _controller_idle_cpu_per_s(seconds: float) -> float:
    """What the controller replica spends with no calls at all (Serve's own loops)."""
    before = _controller_cpu_s()
    await asyncio.sleep(seconds)
    return (_controller_cpu_s() - before) / seconds


def _controller_cpu_s() -> float:
    from bench.cpu import all_processes

    return sum(p.cpu_s for p in all_processes() if p.name.startswith("ray::ServeReplica:calls:AdmissionController"))


def keep_off_engine_cores(engine_cores: str) -> None:
    """The load generator and the app's front end (inherited by every process it starts) run
    on the cores the engine does not; the engine pins its own processes to `engine_cores`."""
    from serve_app.engines.vllm_args import bound_cores

    rest = os.sched_getaffinity(0) - bound_cores(engine_cores)
    if not rest:
        raise SystemExit(f"--engine-cores {engine_cores} leaves no core for the front end")
    os.sched_setaffinity(0, rest)
    say(f"engine on cores {engine_cores}; front end and load on {sorted(rest)}")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("overload", help="admission: overload, fairness and overhead runs")
    parser.add_argument("--engine", choices=["simulated", "vllm"], default="simulated")
    parser.add_argument("--model", default="models/tiny-llama", help="vllm: the checkpoint")
    parser.add_argument("--runs", type=lambda t: t.split(","), default=["overload", "fairness", "overhead"])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per point")
    parser.add_argument("--timeout", type=float, default=30.0, help="client limit per request, s")
    parser.add_argument("--capacity-requests", type=int, default=200)
    parser.add_argument("--capacity-rps", type=float, default=None, help="skip measuring capacity (1x)")
    parser.add_argument("--modes", type=lambda t: t.split(","), default=["off", "on"],
                        help="overload: admission off, on, or both")
    parser.add_argument("--multiples", type=lambda t: [float(x) for x in t.split(",")], default=list(MULTIPLES),
                        help="overload: load points, as multiples of capacity")
    parser.add_argument("--slo-ttft-s", type=float, default=None, help="default: 1 (simulated), 3 (vllm)")
    parser.add_argument("--max-num-seqs", type=int, default=32, help="vllm: sequence slots")
    parser.add_argument("--engine-cores", default=None,
                        help="vllm: cores the engine runs on (e.g. 1); the front end and load get the rest")
    parser.add_argument("--input-tokens", type=int, default=64, help="vllm: prompt tokens per request")
    parser.add_argument("--engine-arg", type=engine_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="vllm: an engine argument over the defaults (a YAML value; null drops one)")
    parser.add_argument("--burst-slots", type=int, default=0,
                        help="sequence slots added to the engine and kept by admission for the bursts "
                             "of tenants granted below their share (admission.burst_fraction)")
    parser.add_argument("--output-tokens", type=int, default=None)
    parser.add_argument("--overhead-rates", type=lambda t: [float(x) for x in t.split(",")],
                        default=[50.0, 100.0, 200.0])
    parser.add_argument("--overhead-repeats", type=int, default=1)
    parser.add_argument("--settle-load", type=float, default=4.0,
                        help="before each point, wait until the 1-minute load average is below this")
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    parser.add_argument("--ingress", choices=["haproxy", "proxy"], default="haproxy",
                        help="proxy avoids clashing with another Ray's HAProxy on this machine")
    parser.add_argument("--client-realtime", action="store_true",
                        help="run the load generator under SCHED_FIFO, so the servers sharing its "
                             "cores cannot hold up its reading of their answers (needs CAP_SYS_NICE)")
    parser.add_argument("--out", type=Path, default=None, help="default bench/out/admission-<stamp>")


def command(args: argparse.Namespace) -> None:
    out = args.out or Path("bench/out") / time.strftime("admission-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": _commit(),
                               "args": {k: str(v) for k, v in vars(args).items()}}
    if args.engine == "simulated":
        engine = simulated_engine(output_tokens=args.output_tokens or 32, slo_s=args.slo_ttft_s or 1.0)
    else:
        engine = vllm_engine(args.model, args.max_num_seqs, args.output_tokens or 32, args.slo_ttft_s or 3.0,
                             args.engine_cores, args.input_tokens, dict(args.engine_arg))
        if args.engine_cores:
            keep_off_engine_cores(args.engine_cores)
    engine = with_burst_slots(engine, args.burst_slots)
    with realtime(PRIORITY if args.client_realtime else None) as client_realtime:
        results["client_realtime"] = client_realtime
        if args.client_realtime and not client_realtime:
            say("--client-realtime: the kernel refused SCHED_FIFO; the load generator runs as before")
        if {"overload", "fairness"} & set(args.runs):
            results["admission"] = run_admission(engine, args, out)
        if "overhead" in args.runs:
            results["overhead"] = run_overhead(args, out)
        if "calls" in args.runs:
            results["calls"] = run_calls(args)
    (out / "admission.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "admission.md").write_text(markdown(results))
    print(markdown(results))
    say(f"results in {out}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def points_table(points: list[dict[str, Any]]) -> list[str]:
    lines = ["| run | offered req/s | sent | ok | goodput req/s | TTFT p50 / p99 ms (admitted) "
             "| refused (code: n) | refusal p50 / p99 ms | refusal p99 in the router ms "
             "| refusal p99 net of client stalls ms | client stalls s | other failures | load avg |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|"]
    for p in points:
        refused = ", ".join(f"{k}: {v}" for k, v in (p.get("refused_codes") or p["refused"]).items()) or "-"
        others = ", ".join(f"{k}: {v}" for k, v in p["other_failures"].items()) or "-"
        lines.append(f"| {p['label']} | {p['rate']:.1f} | {p['sent']} | {p['ok']} | {p['goodput_rps']:.2f} "
                     f"| {_ms(p['admitted_ttft_p50_s'])} / {_ms(p['admitted_ttft_p99_s'])} | {refused} "
                     f"| {_ms(p['refusal_p50_s'])} / {_ms(p['refusal_p99_s'])} "
                     f"| {_ms(p.get('refusal_router_p99_s'))} | {_ms(p.get('refusal_p99_net_s'))} "
                     f"| {p.get('client_stall_s', '-')} | {others} "
                     f"| {p.get('load_average') or '-'} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The runs as tables, for bench/RESULTS-admission.md."""
    client = "under SCHED_FIFO" if results.get("client_realtime") else "at the normal policy"
    lines = [f"Run {results['created']}, commit {results['commit']}; load generator {client}.", ""]
    found = results.get("admission")
    if found:
        lines += [f"Engine: {found['engine']}; {found['input_tokens']} prompt + {found['output_tokens']} output "
                  f"tokens, streamed; TTFT SLO {found['slo_ttft_s']:g} s; capacity (1x) "
                  f"{found['capacity_rps']:.2f} requests/s.", ""]
        for key in ("on", "off", "fairness"):
            if key in found:
                lines += points_table(found[key]) + [""]
    overhead = results.get("overhead")
    if overhead:
        lines += points_table(overhead.get("on", []) + overhead.get("off", [])) + [""]
        lines += overhead_table(overhead) + [""]
    calls = results.get("calls")
    if calls:
        lines += ["| rate req/s | path | admit calls | admit p50 / p90 / p99 ms | empty handle call p50 ms "
                  "(sequential) | controller CPU ms/request (less idle) | load avg |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {c['rate']:g} | {c.get('path', 'handle')} | {c['calls']} "
                  f"| {c['admit_p50_ms']:.2f} / {c['admit_p90_ms']:.2f} / "
                  f"{c['admit_p99_ms']:.2f} | {c.get('empty_call_p50_ms', 0):.2f} "
                  f"| {c['controller_cpu_ms_per_request']:.2f} ({_busy_ms(c)}) | {c['load_average']} |"
                  for c in calls["calls"]] + [""]
    return "\n".join(lines)


def _busy_ms(call: dict[str, Any]) -> str:
    busy = call.get("controller_busy_cpu_ms_per_request")
    return "-" if busy is None else f"{busy:.2f}"


def overhead_table(overhead: dict[str, Any]) -> list[str]:
    """Per rate: TTFT p50 with and without admission, and CPU per request of the processes
    admission touches."""
    lines = ["| rate req/s | TTFT p50 on / off ms | added p50 ms | Router CPU ms/req on / off "
             "| AdmissionController CPU ms/req | all processes CPU ms/req on / off |",
             "|---:|---:|---:|---:|---:|---:|"]
    for on, off in zip(overhead.get("on", []), overhead.get("off", [])):
        ttft_on, ttft_off = on["admitted_ttft_p50_s"], off["admitted_ttft_p50_s"]
        added = f"{(ttft_on - ttft_off) * 1000:.1f}" if ttft_on is not None and ttft_off is not None else "-"
        cpu_on, cpu_off = on["cpu_ms_per_request"], off["cpu_ms_per_request"]
        lines.append(f"| {on['rate']:g} | {_ms(ttft_on)} / {_ms(ttft_off)} | {added} "
                     f"| {cpu_on.get('Router', 0):.2f} / {cpu_off.get('Router', 0):.2f} "
                     f"| {cpu_on.get('AdmissionController', 0):.2f} "
                     f"| {sum(cpu_on.values()):.2f} / {sum(cpu_off.values()):.2f} |")
    return lines


def _commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return found.stdout.strip()
