"""Render a model's config into the arguments `vllm serve` would get.

Kept free of vLLM imports so it is cheap to test; `engines/vllm.py` parses the
result with vLLM's own argument parser, so defaults and validation match
`vllm serve` exactly.
"""

from __future__ import annotations

import json
from typing import Any

from serve_app.config import ModelConfig
from serve_app.engines import io_slice
from serve_app.engines.cpu_dtype import native_cpu_dtype


def resolve_executor(model: ModelConfig) -> str:
    """The distributed executor backend vLLM should use for this model.

    GPU: ray, so the workers land in the replica's placement group.
    CPU: mp, because vLLM's CPU platform refuses the ray executor.
    """
    chosen = model.parallelism.executor
    if chosen != "auto":
        if chosen == "ray" and model.device == "cpu":
            raise ValueError(
                f"model {model.name!r}: vLLM's CPU platform does not support the ray "
                "executor; use executor: mp (or auto)"
            )
        return chosen
    if model.parallelism.world_size == 1:
        return "uni"
    return "ray" if model.device == "gpu" else "mp"


def _flag(key: str, value: Any) -> list[str]:
    name = "--" + key.replace("_", "-")
    if value is True:
        return [name]
    if value is False:
        return ["--no-" + key.replace("_", "-")]
    if value is None:
        return []
    if isinstance(value, (dict, list)):
        return [name, json.dumps(value)]
    return [name, str(value)]


def serve_argv(model: ModelConfig) -> list[str]:
    """Command-line arguments equivalent to this model's engine configuration."""
    argv = [
        model.source,
        "--served-model-name", model.name,
        "--tensor-parallel-size", str(model.parallelism.tensor),
        "--pipeline-parallel-size", str(model.parallelism.pipeline),
        "--distributed-executor-backend", resolve_executor(model),
    ]
    # The engine's own queue follows admission's order (EngineRequest.priority).
    defaults: dict[str, Any] = {"scheduling_policy": "priority"}
    if model.device == "cpu":  # read on the replica's host, where the engine runs
        defaults["dtype"] = native_cpu_dtype()
    for key, value in {**defaults, **model.engine_args}.items():
        argv += _flag(key, value)
    return argv


def cpu_thread_binding(world_size: int, cores: list[int]) -> str:
    """Split the cores this process may use evenly across ranks: "0|1" for two ranks."""
    cores = sorted(cores)
    if world_size > len(cores):
        raise ValueError(f"{world_size} CPU workers need at least {world_size} cores, have {len(cores)}")
    share = len(cores) // world_size
    groups = [cores[rank * share:(rank + 1) * share] for rank in range(world_size)]
    return "|".join(",".join(str(core) for core in group) for group in groups)


def engine_env(model: ModelConfig, cores: list[int]) -> dict[str, str]:
    """Environment the engine needs before vLLM is imported. CPU threads are bound when the
    config names cores (any world size) or when several ranks must split this process's cores.
    The engine core's socket threads get a short scheduler slice (`io_slice`) unless the
    model's `env` sets its own (0 turns it off)."""
    env = dict(model.env)
    env.setdefault(io_slice.ENV, str(io_slice.DEFAULT_US))
    binding = model.parallelism.cpu_thread_binding
    if model.device == "cpu" and (binding or model.parallelism.world_size > 1):
        env.setdefault(
            "VLLM_CPU_OMP_THREADS_BIND",
            binding or cpu_thread_binding(model.parallelism.world_size, cores),
        )
    return env


def bound_cores(binding: str | None) -> set[int]:
    """The cores a VLLM_CPU_OMP_THREADS_BIND value names ("1", "0-3|4-7", "0,2|1,3");
    empty for vLLM's own choices ("auto", "nobind") or none at all."""
    if not binding or binding in ("auto", "nobind"):
        return set()
    cores: set[int] = set()
    for part in binding.replace("|", ",").split(","):
        first, _, last = part.strip().partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return cores
