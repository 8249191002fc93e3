"""How a CPU replica lays out vLLM's engine processes.

vLLM on CPU spawns its engine-core and worker processes and tells each worker's
OpenMP runtime, through its environment, which cores and how many threads to use.
A replica forks them instead: a spawned child re-imports vLLM and torch, a third
of a CPU replica's cold start. A forked child's OpenMP runtime was initialised in
the replica and never reads that environment, so what it would have done at start
is done at fork time here (`honour_openmp_environment`).

With one worker, the worker runs inside the engine-core process (vLLM's `uni`
executor), as it does on GPU. vLLM's CPU platform swaps `uni` for `mp` only so
that a freshly spawned worker reads its OpenMP environment; the swap costs a
second process that busy-polls shared memory between steps, about half a core
the front end needs, and two hand-offs per engine step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

from serve_app.config import ModelConfig

# Only the forms vLLM writes; anything else (OMP_PLACES=cores, say) is left to OpenMP.
OMP_PLACES = re.compile(r"\{([\d,]+)\}")
GOMP_CPU_AFFINITY = re.compile(r"([\d ]+)")
KMP_PROCLIST = re.compile(r".*proclist=\[([\d,]+)\].*")


@contextmanager
def cpu_engine_processes(model: ModelConfig, vllm_config: Any) -> Iterator[None]:
    """Around `AsyncLLM` start-up: fork the engine processes and put them on their cores."""
    if model.device != "cpu":
        yield
        return
    from vllm.utils.ompmultiprocessing import OMPProcessManager

    openmp = OMPProcessManager(vllm_config)
    honour_openmp_environment()
    with forking_engine_processes():
        if vllm_config.parallel_config.distributed_executor_backend == "uni":
            with openmp.configure_omp_envs(rank=0, local_rank=0):  # the engine core is the worker
                yield
        else:
            with children_pinned_to({core for cores in openmp.cpu_lists for core in cores}):
                yield


def run_single_worker_in_engine_core(model: ModelConfig, executor: str, vllm_config: Any) -> None:
    """Undo vLLM's CPU swap of `uni` for `mp` (see the module docstring)."""
    if model.device == "cpu" and executor == "uni":
        vllm_config.parallel_config.distributed_executor_backend = "uni"


@contextmanager
def forking_engine_processes() -> Iterator[None]:
    """Let vLLM fork, not spawn, its engine-core (and CPU worker) processes from this replica.

    Inside a Ray actor vLLM always spawns. Spawning exists for children that join
    the Ray cluster or use CUDA; on CPU the engine core and its `mp`/`uni` workers
    do neither, and a forked child runs only vLLM's code before it exits with
    `os._exit`, never Ray's. GPU replicas keep vLLM's choice.
    """
    import setproctitle
    from ray import _raylet
    from vllm.utils import system_utils

    in_ray_actor, set_title = system_utils.is_in_ray_actor, setproctitle.setproctitle
    system_utils.is_in_ray_actor = lambda: False
    # A child forked from a Ray worker can only retitle itself the way Ray titled the
    # worker; without this, `ps` would show VLLM::EngineCore and VLLM::Worker_TP0 as replicas.
    setproctitle.setproctitle = _raylet.setproctitle
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"
    try:
        yield
    finally:
        system_utils.is_in_ray_actor, setproctitle.setproctitle = in_ray_actor, set_title


@contextmanager
def children_pinned_to(cores: set[int]) -> Iterator[None]:
    """Processes forked meanwhile run only on `cores`: with several workers, the engine
    core's busy-polling scheduler stays off the front end's cores. Only the calling
    thread's affinity changes, and only for the duration."""
    if not cores:
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


@cache
def honour_openmp_environment() -> None:
    """From now on, a process forked from this one applies the OpenMP environment it is
    forked with (registered once per process; forks inherit the registration)."""
    os.register_at_fork(after_in_child=apply_openmp_environment)


def apply_openmp_environment() -> None:
    """In a freshly forked child: run on the cores and with the threads OpenMP was told."""
    cores = openmp_cores(os.environ)
    if not cores:
        return
    import torch

    os.sched_setaffinity(0, cores)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or len(cores)))


def openmp_cores(environ: Mapping[str, str]) -> set[int]:
    """The cores vLLM wrote for OpenMP: OMP_PLACES "{0,1}", GOMP_CPU_AFFINITY "0 1" or
    KMP_AFFINITY "...,proclist=[0,1]"; empty when it wrote none."""
    for name, form in (("OMP_PLACES", OMP_PLACES), ("GOMP_CPU_AFFINITY", GOMP_CPU_AFFINITY),
                       ("KMP_AFFINITY", KMP_PROCLIST)):
        if match := form.fullmatch(environ.get(name, "")):
            return {int(core) for core in re.findall(r"\d+", match.group(1))}
    return set()
