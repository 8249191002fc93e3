"""Placement, specified: the actor's bundle first, then one bundle per tensor x pipeline worker."""

from __future__ import annotations

import pytest

from serve_app.config import ModelConfig, Parallelism, ReplicaResources, SimulatedEngineConfig
from serve_app.placement import placement_strategy, replica_bundles, worker_bundle


def make_model(tensor: int = 1, pipeline: int = 1, *, device: str = "gpu", engine: str = "vllm",
               placement: str = "strict_pack", num_cpus: float = 2.0,
               worker_cpus: float = 4.0) -> ModelConfig:
    return ModelConfig(
        name="m", source="org/m", engine=engine, device=device,
        parallelism=Parallelism(tensor=tensor, pipeline=pipeline, placement=placement),
        resources=ReplicaResources(num_cpus=num_cpus, worker_cpus=worker_cpus),
    )


@pytest.mark.parametrize(("tensor", "pipeline"), [(1, 1), (4, 1), (8, 1), (4, 2)],
                         ids=["tp1", "tp4", "tp8", "tp4xpp2"])
def test_gpu_replica_gets_actor_bundle_then_one_gpu_bundle_per_worker(tensor, pipeline):
    bundles = replica_bundles(make_model(tensor, pipeline, num_cpus=2.0, worker_cpus=4.0))
    assert bundles[0] == {"CPU": 2.0}
    assert bundles[1:] == [{"GPU": 1.0, "CPU": 4.0}] * (tensor * pipeline)
    assert sum(bundle.get("GPU", 0) for bundle in bundles) == tensor * pipeline


def test_gpu_worker_bundle_without_worker_cpus_holds_only_the_gpu():
    assert worker_bundle(make_model(device="gpu", worker_cpus=0)) == {"GPU": 1.0}


def test_actor_bundle_never_holds_a_gpu():
    assert "GPU" not in replica_bundles(make_model(8))[0]


@pytest.mark.parametrize(("tensor", "pipeline"), [(1, 1), (2, 1), (2, 2)])
def test_cpu_replica_reserves_cpu_bundles_for_its_workers(tensor, pipeline):
    bundles = replica_bundles(make_model(tensor, pipeline, device="cpu", num_cpus=0.2, worker_cpus=1.0))
    assert bundles == [{"CPU": 0.2}] + [{"CPU": 1.0}] * (tensor * pipeline)
    assert all("GPU" not in bundle for bundle in bundles)


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_simulated_engine_gets_only_the_actor_bundle(device):
    model = make_model(8, 2, device=device, engine="simulated", num_cpus=1.5)
    assert replica_bundles(model) == [{"CPU": 1.5}]


@pytest.mark.parametrize(
    ("placement", "strategy"),
    [("strict_pack", "STRICT_PACK"), ("pack", "PACK"),
     ("spread", "SPREAD"), ("strict_spread", "STRICT_SPREAD")],
)
def test_placement_maps_to_the_ray_strategy(placement, strategy):
    assert placement_strategy(make_model(4, placement=placement)) == strategy


def test_default_strategy_keeps_a_replica_on_one_node():
    assert placement_strategy(ModelConfig(name="m", source="org/m")) == "STRICT_PACK"


def test_a_simulated_replica_can_reserve_the_bundles_a_real_one_would():
    real = ModelConfig(name="m", source="s", device="gpu", parallelism={"tensor": 4})
    simulated = real.model_copy(update={"engine": "simulated",
                                        "simulated": SimulatedEngineConfig(reserve_workers=True)})
    assert replica_bundles(simulated) == replica_bundles(real)
    assert placement_strategy(simulated) == placement_strategy(real)
