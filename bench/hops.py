"""What the serving layer itself costs, measured with the simulated engine.

    python -m bench.hops --config deploy/simulated.yaml --out bench/out/hops

With no engine cost in the way: (1) requests/s and streamed tokens/s one router
replica sustains per CPU core (its CPU seconds under a saturating closed loop);
(2) latency the path adds over the engine's own modelled time to first token and
inter-token time, at concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from pathlib import Path

from bench.arrivals import ClosedLoop
from bench.client import Endpoint
from bench.launcher import launch, stop, wait_first_completion
from bench.measure import Measurement, measure
from bench.systems import App, Model
from bench.workload import fixed_lengths
from serve_app.config import load_config


def cpu_of(measurement: Measurement, part: str) -> float:
    return sum(seconds for name, seconds in measurement.cpu.by_name.items() if part in name)


def modelled_ttft_s(config_path: Path, prompt_chars: int) -> tuple[float, float]:
    """The simulated engine's own time to first token and decode step at batch 1."""
    sim = load_config(config_path).models[0].simulated
    prompt_tokens = math.ceil(prompt_chars / 4)  # the router's estimate, which the engine uses
    return prompt_tokens / sim.prefill_tokens_per_s + sim.decode_step_base_s, sim.decode_step_base_s


def capacity_row(measurement: Measurement) -> dict[str, float]:
    router_s = cpu_of(measurement, "Router")
    summary = measurement.summary
    busy = router_s / summary.wall_s  # cores the router kept busy
    return {
        "router_cores_busy": round(busy, 3),
        "requests_per_s": round(summary.requests_per_s, 1),
        "tokens_per_s": round(summary.output_tokens_per_s, 1),
        "router_requests_per_core_s": round(summary.requests_per_s / busy, 1),
        "router_tokens_per_core_s": round(summary.output_tokens_per_s / busy, 1),
        "router_cpu_ms_per_token": round(1000 * router_s / max(summary.output_tokens, 1), 4),
        "replica_cpu_ms_per_token": round(
            1000 * cpu_of(measurement, "LLMServer") / max(summary.output_tokens, 1), 4),
        "admission_cpu_ms_per_request": round(
            1000 * cpu_of(measurement, "AdmissionController") / max(summary.requests, 1), 3),
    }


async def run(config: Path, concurrency: int, requests: int, output_tokens: int) -> dict:
    model = load_config(config).models[0].name
    running = launch(App("app", Model("simulated", model), config=config), Path("bench/out/logs"))
    try:
        wait_first_completion(running)
        endpoint = Endpoint(running.base_url)
        single = fixed_lengths(model, 200, 64, output_tokens, stream=True, seed=1)
        latency = await measure(endpoint, single, ClosedLoop(1), cpu_pids=[running.pid])
        load = fixed_lengths(model, requests, 64, output_tokens, stream=True, seed=2)
        saturated = await measure(endpoint, load, ClosedLoop(concurrency), cpu_pids=[running.pid])
    finally:
        stop(running, ray_stop=False)
    prompt_chars = len(single[0].body["messages"][-1]["content"])
    ttft_model, step = modelled_ttft_s(config, prompt_chars)
    summary = latency.summary
    return {
        "concurrency": concurrency, "output_tokens": output_tokens,
        "capacity": capacity_row(saturated),
        "latency_c1": {
            "ttft_p50_ms": round(1000 * summary.ttft_s.p50, 2),
            "ttft_model_ms": round(1000 * ttft_model, 2),
            "added_ttft_p50_ms": round(1000 * (summary.ttft_s.p50 - ttft_model), 2),
            "itl_p50_ms": round(1000 * summary.itl_s.p50, 2),
            "step_model_ms": round(1000 * step, 2),
            "added_itl_p50_ms": round(1000 * (summary.itl_s.p50 - step), 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("deploy/simulated.yaml"))
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/out/hops"))
    args = parser.parse_args()
    result = asyncio.run(run(args.config, args.concurrency, args.requests, args.output_tokens))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hops.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
