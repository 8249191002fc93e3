"""A CPU replica lets vLLM fork its engine processes; a GPU replica keeps vLLM's choice."""

from __future__ import annotations

import os

import pytest

from serve_app.config import ModelConfig
from serve_app.engines.vllm import children_pinned_to, forking_engine_processes

system_utils = pytest.importorskip("vllm.utils.system_utils")


@pytest.fixture
def in_a_ray_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_utils, "is_in_ray_actor", lambda: True)
    # vLLM writes VLLM_WORKER_MULTIPROC_METHOD and RAY_ADDRESS; a RAY_ADDRESS left behind
    # would make every later ray.init in this process join a cluster that is gone.
    environ = {k: v for k, v in os.environ.items() if k not in ("VLLM_WORKER_MULTIPROC_METHOD", "RAY_ADDRESS")}
    monkeypatch.setattr(os, "environ", environ)


def model(device: str) -> ModelConfig:
    return ModelConfig(name="m", source="/m", device=device)


def test_on_cpu_vllm_forks_even_inside_a_ray_actor(in_a_ray_actor):
    with forking_engine_processes(model("cpu")):
        assert system_utils.get_mp_context().get_start_method() == "fork"


def test_afterwards_vllm_sees_the_ray_actor_again(in_a_ray_actor):
    with forking_engine_processes(model("cpu")):
        pass
    assert system_utils.is_in_ray_actor()


def test_on_gpu_vllm_still_spawns_inside_a_ray_actor(in_a_ray_actor, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "get_runtime_context", lambda: _Context())
    with forking_engine_processes(model("gpu")):
        assert system_utils.get_mp_context().get_start_method() == "spawn"


class _Context:
    gcs_address = "127.0.0.1:6379"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell pinned from free")
def test_a_process_forked_while_pinned_runs_only_on_the_engine_cores_and_the_replica_is_freed_after():
    own = os.sched_getaffinity(0)
    engine_core = max(own)
    with children_pinned_to({engine_core}):
        child = os.fork()
        if child == 0:
            os._exit(0 if os.sched_getaffinity(0) == {engine_core} else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.sched_getaffinity(0) == own


def test_no_binding_leaves_affinity_alone():
    own = os.sched_getaffinity(0)
    with children_pinned_to(set()):
        assert os.sched_getaffinity(0) == own
