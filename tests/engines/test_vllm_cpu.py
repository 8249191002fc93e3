"""How a CPU replica lays out vLLM's engine processes: forked, on their cores, one worker in
the engine core; a GPU replica keeps vLLM's choices."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from serve_app.config import ModelConfig
from serve_app.engines.vllm_cpu import (
    children_pinned_to,
    cpu_engine_processes,
    forking_engine_processes,
    honour_openmp_environment,
    openmp_cores,
    run_single_worker_in_engine_core,
)

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
    with forking_engine_processes():
        assert system_utils.get_mp_context().get_start_method() == "fork"


def test_afterwards_vllm_sees_the_ray_actor_again(in_a_ray_actor):
    with forking_engine_processes():
        pass
    assert system_utils.is_in_ray_actor()


def test_on_gpu_vllm_still_spawns_inside_a_ray_actor(in_a_ray_actor, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "get_runtime_context", lambda: _Context())
    with cpu_engine_processes(model("gpu"), vllm_config("ray")):
        assert system_utils.get_mp_context().get_start_method() == "spawn"


class _Context:
    gcs_address = "127.0.0.1:6379"


def vllm_config(backend: str) -> SimpleNamespace:
    return SimpleNamespace(parallel_config=SimpleNamespace(distributed_executor_backend=backend))


# --- one worker runs inside the engine core ---------------------------------------

def test_on_cpu_one_worker_runs_inside_the_engine_core_although_vllm_chose_mp():
    config = vllm_config("mp")  # what vLLM's CPU platform makes of "uni"
    run_single_worker_in_engine_core(model("cpu"), "uni", config)
    assert config.parallel_config.distributed_executor_backend == "uni"


@pytest.mark.parametrize(("device", "executor"), [("cpu", "mp"), ("gpu", "ray"), ("gpu", "mp")])
def test_an_executor_chosen_for_several_workers_or_a_gpu_is_kept(device, executor):
    config = vllm_config(executor)
    run_single_worker_in_engine_core(model(device), executor, config)
    assert config.parallel_config.distributed_executor_backend == executor


# --- OpenMP settings survive the fork ------------------------------------------------

@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"OMP_PLACES": "{0,2,3}"}, {0, 2, 3}),
        ({"GOMP_CPU_AFFINITY": "1 3"}, {1, 3}),
        ({"KMP_AFFINITY": "granularity=fine,explicit,proclist=[4,5]"}, {4, 5}),
        ({"OMP_PLACES": "cores"}, set()),
        ({"OMP_PLACES": "{0:4}"}, set()),
        ({}, set()),
    ],
)
def test_openmp_cores_reads_the_forms_vllm_writes_and_nothing_else(environ, expected):
    assert openmp_cores(environ) == expected


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell pinned from free")
def test_a_forked_worker_runs_on_the_cores_and_threads_its_openmp_environment_names(monkeypatch):
    torch = pytest.importorskip("torch")
    core = max(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_PLACES", f"{{{core}}}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    honour_openmp_environment()
    child = os.fork()  # as vLLM forks its worker, with the settings in the environment
    if child == 0:
        os._exit(0 if os.sched_getaffinity(0) == {core} and torch.get_num_threads() == 1 else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


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
