"""Where a replica's engine workers run: its placement-group bundles and strategy.

Bundle 0 holds the replica actor itself; then one bundle per tensor x pipeline
worker (`{"GPU": 1}` on GPU, `{"CPU": n}` on CPU). On GPU, vLLM's ray executor
starts the workers inside these bundles. On CPU, vLLM refuses the ray executor:
the workers are child processes of the replica (mp executor) and the bundles
only reserve their cores so Ray schedules nothing else onto them.
"""

from __future__ import annotations

from serve_app.config import ModelConfig

Bundle = dict[str, float]

_STRATEGIES = {
    "strict_pack": "STRICT_PACK",
    "pack": "PACK",
    "spread": "SPREAD",
    "strict_spread": "STRICT_SPREAD",
}


def worker_bundle(model: ModelConfig) -> Bundle:
    if model.device == "gpu":
        bundle: Bundle = {"GPU": 1.0}
        if model.resources.worker_cpus:
            bundle["CPU"] = model.resources.worker_cpus
        return bundle
    return {"CPU": model.resources.worker_cpus}


def replica_bundles(model: ModelConfig) -> list[Bundle]:
    """The replica actor's own bundle, then one bundle per engine worker."""
    actor: Bundle = {"CPU": model.resources.num_cpus}
    if model.engine == "simulated" and not model.simulated.reserve_workers:
        return [actor]
    return [actor] + [worker_bundle(model) for _ in range(model.parallelism.world_size)]


def placement_strategy(model: ModelConfig) -> str:
    return _STRATEGIES[model.parallelism.placement]
