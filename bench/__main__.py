"""Command line: `run` a suite of systems, `load` one running endpoint, re-`report` results."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from bench import overload
from bench.arrivals import ClosedLoop, LoadPoint, OpenLoop
from bench.client import Endpoint
from bench.markdown import report, runs_table
from bench.measure import append_requests, measure, warm_up
from bench.results import Load, RunResult, SuiteResult
from bench.stats import Slo
from bench.suite import SuiteOptions, run_suite, write_outputs
from bench.systems import SYSTEMS, EngineSettings, Model
from bench.workload import WORKLOADS, Workload
from serve_app.engines.cpu_dtype import native_cpu_dtype


def _numbers(kind):
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"header {text!r} is not NAME:VALUE")
    return name.strip(), value.strip()


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load")
    group.add_argument("--concurrency", type=_numbers(int), default=[],
                       help="closed-loop load points, comma separated (e.g. 1,64)")
    group.add_argument("--rate", type=_numbers(float), default=[],
                       help="open-loop load points in requests/s, comma separated")
    group.add_argument("--arrival", choices=["poisson", "gamma"], default="poisson")
    group.add_argument("--burstiness", type=float, default=0.5,
                       help="gamma shape: below 1 is burstier than Poisson (default 0.5)")
    group.add_argument("--seed", type=int, default=0)


def _add_workload_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--workload", choices=WORKLOADS, default="fixed")
    group.add_argument("--requests", type=int, default=256, help="requests per load point")
    group.add_argument("--input-tokens", type=int, default=128,
                       help="prompt length (shared-prefix: the per-request suffix)")
    group.add_argument("--output-tokens", type=int, default=64)
    group.add_argument("--prefix-tokens", type=int, default=1024, help="shared-prefix only")
    group.add_argument("--no-stream", dest="stream", action="store_false")
    group.add_argument("--warmup", type=int, default=8, help="unmeasured requests first")


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("client")
    group.add_argument("--api-key", default=os.environ.get("BENCH_API_KEY"),
                       help="sent as Bearer token (default $BENCH_API_KEY)")
    group.add_argument("--header", type=_header, action="append", default=[],
                       help="extra request header NAME:VALUE (repeatable)")
    group.add_argument("--timeout", type=float, default=300.0, help="hard limit per request, s")
    group.add_argument("--slo-ttft-ms", type=float, default=None, help="goodput: TTFT target")
    group.add_argument("--slo-tpot-ms", type=float, default=None, help="goodput: TPOT target")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="launch each system in turn and load it")
    run.add_argument("--systems", type=lambda t: t.split(","), default=["vllm"],
                     help=f"comma separated, from {', '.join(SYSTEMS)}")
    run.add_argument("--model", required=True, help="checkpoint path")
    run.add_argument("--served-model-name", default=None, help="default: the path's last part")
    run.add_argument("--repeats", type=int, default=1)
    run.add_argument("--baseline", default=None, help="system the ratios compare with "
                     "(default: the first)")
    run.add_argument("--out", type=Path, default=None, help="default bench/out/<stamp>")
    run.add_argument("--app-config", type=Path, default=None,
                     help="YAML for the app system (default: one written with the engine settings)")
    run.add_argument("--max-model-len", type=int, default=2048)
    run.add_argument("--dtype", default=native_cpu_dtype(),
                     help="every engine's dtype (default: the one this CPU computes natively)")
    run.add_argument("--kv-cache-gib", type=float, default=1.0,
                     help="KV cache size every system's engine gets (0: vLLM's default)")
    run.add_argument("--launch-timeout", type=float, default=900.0)
    run.add_argument("--no-ray-stop", dest="ray_stop", action="store_false",
                     help="skip `ray stop --force` after Ray systems (it stops every Ray "
                     "on the machine); their process trees are still killed")
    for add in (_add_load_options, _add_workload_options, _add_client_options):
        add(run)

    load = commands.add_parser("load", help="load an endpoint that is already running")
    load.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    load.add_argument("--model", required=True, help="model name the server serves")
    load.add_argument("--cpu-pid", type=int, action="append", default=[],
                      help="account CPU of this process tree (repeatable)")
    load.add_argument("--out", type=Path, default=None, help="also write results there")
    for add in (_add_load_options, _add_workload_options, _add_client_options):
        add(load)

    overload.add_parser(commands)

    again = commands.add_parser("report", help="rewrite results.md and plots from results.json")
    again.add_argument("dir", type=Path)
    again.add_argument("--baseline", default=None)
    return parser


def load_points(args: argparse.Namespace) -> list[LoadPoint]:
    points: list[LoadPoint] = [ClosedLoop(c) for c in args.concurrency]
    points += [OpenLoop(r, args.arrival, args.burstiness, args.seed) for r in args.rate]
    return points or [ClosedLoop(1)]


def workload(args: argparse.Namespace) -> Workload:
    return Workload(args.workload, args.requests, args.input_tokens, args.output_tokens,
                    args.prefix_tokens, args.stream, args.seed)


def slo(args: argparse.Namespace) -> Slo:
    def seconds(ms: float | None) -> float | None:
        return None if ms is None else ms / 1000.0
    return Slo(ttft_s=seconds(args.slo_ttft_ms), tpot_s=seconds(args.slo_tpot_ms))


def command_run(args: argparse.Namespace) -> None:
    out = args.out or Path("bench/out") / time.strftime("%Y%m%d-%H%M%S")
    name = args.served_model_name or Path(args.model.rstrip("/")).name
    options = SuiteOptions(
        systems=args.systems, model=Model(args.model, name), loads=load_points(args),
        out=out, workload=workload(args),
        engine=EngineSettings(max_model_len=args.max_model_len, dtype=args.dtype,
                              kv_cache_memory_bytes=int(args.kv_cache_gib * (1 << 30)) or None),
        repeats=args.repeats, slo=slo(args), baseline=args.baseline or args.systems[0],
        app_config=args.app_config, api_key=args.api_key, headers=dict(args.header),
        timeout_s=args.timeout, warmup_requests=args.warmup, launch_timeout_s=args.launch_timeout,
        ray_stop=args.ray_stop)
    suite = run_suite(options)
    print(report(suite))
    print(f"results in {out}", file=sys.stderr)


async def _load(args: argparse.Namespace) -> SuiteResult:
    endpoint = Endpoint(args.url, args.api_key, dict(args.header), args.timeout)
    specs = workload(args).specs(args.model)
    suite = SuiteResult(created=time.strftime("%Y-%m-%d %H:%M:%S"), model=args.model,
                        settings={"url": args.url, "workload": args.workload,
                                  "requests": args.requests, "stream": args.stream})
    await warm_up(endpoint, specs[: args.warmup])
    for point in load_points(args):
        measured = await measure(endpoint, specs, point, slo(args), args.cpu_pid)
        suite.runs.append(RunResult(system=args.url, load=Load.of(point), repeat=0,
                                    stream=args.stream, summary=measured.summary, cpu=measured.cpu,
                                    frontend_cpu_ms_per_token=measured.frontend_cpu_ms_per_token))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            append_requests(args.out / "requests.jsonl", {"load": point.label}, measured.run)
    return suite


def command_load(args: argparse.Namespace) -> None:
    suite = asyncio.run(_load(args))
    print(runs_table(suite))
    if args.out:
        write_outputs(suite, args.out)


def command_report(args: argparse.Namespace) -> None:
    suite = SuiteResult.load(args.dir / "results.json")
    if args.baseline:
        suite.baseline = args.baseline
    write_outputs(suite, args.dir)
    print(report(suite))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {"run": command_run, "load": command_load, "report": command_report, "overload": overload.command}
    commands[args.command](args)


def fast_event_loops() -> None:
    """uvloop for every `asyncio.run` of the load generator, when installed (it comes with
    uvicorn): less CPU per request on cores the measured servers share, and less of the
    generator's own scheduling lag in the latencies it records."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    fast_event_loops()
    main()
