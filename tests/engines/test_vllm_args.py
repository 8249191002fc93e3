"""Rendering a model's config into `vllm serve` arguments and engine environment, specified."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.config import ModelConfig, Parallelism, load_config
from serve_app.engines.cpu_dtype import native_cpu_dtype
from serve_app.engines.vllm_args import (
    bound_cores,
    cpu_thread_binding,
    engine_env,
    resolve_executor,
    serve_argv,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def make_model(tensor: int = 1, pipeline: int = 1, *, device: str = "gpu", executor: str = "auto",
               binding: str | None = None, engine_args: dict | None = None,
               env: dict | None = None, name: str = "m") -> ModelConfig:
    return ModelConfig(
        name=name, source="org/checkpoint", device=device,
        parallelism=Parallelism(tensor=tensor, pipeline=pipeline, executor=executor,
                                cpu_thread_binding=binding),
        engine_args=engine_args or {}, env=env or {},
    )


def flag_value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, f"{flag} should appear once in {argv}"
    return argv[argv.index(flag) + 1]


# --- executor ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("device", "tensor", "pipeline", "expected"),
    [
        ("gpu", 1, 1, "uni"),
        ("cpu", 1, 1, "uni"),
        ("gpu", 4, 1, "ray"),
        ("gpu", 1, 2, "ray"),
        ("gpu", 4, 2, "ray"),
        ("cpu", 2, 1, "mp"),
        ("cpu", 2, 2, "mp"),
    ],
)
def test_auto_executor_follows_world_size_and_platform(device, tensor, pipeline, expected):
    assert resolve_executor(make_model(tensor, pipeline, device=device)) == expected


@pytest.mark.parametrize("executor", ["uni", "mp", "ray"])
def test_explicit_executor_is_kept_on_gpu(executor):
    assert resolve_executor(make_model(2, device="gpu", executor=executor)) == executor


def test_explicit_mp_executor_is_kept_on_cpu():
    assert resolve_executor(make_model(2, device="cpu", executor="mp")) == "mp"


def test_explicit_ray_executor_on_cpu_is_refused_naming_the_model():
    with pytest.raises(ValueError, match="cpu-model"):
        resolve_executor(make_model(2, device="cpu", executor="ray", name="cpu-model"))


# --- serve argv ----------------------------------------------------------------------

def test_serve_argv_starts_with_the_source_and_names_parallelism_and_executor():
    argv = serve_argv(make_model(4, 2, name="big"))
    assert argv[0] == "org/checkpoint"
    assert flag_value(argv, "--served-model-name") == "big"
    assert flag_value(argv, "--tensor-parallel-size") == "4"
    assert flag_value(argv, "--pipeline-parallel-size") == "2"
    assert flag_value(argv, "--distributed-executor-backend") == "ray"


def test_the_engine_queues_by_admissions_priority_unless_configured_otherwise():
    assert flag_value(serve_argv(make_model()), "--scheduling-policy") == "priority"
    fcfs = serve_argv(make_model(engine_args={"scheduling_policy": "fcfs"}))
    assert flag_value(fcfs, "--scheduling-policy") == "fcfs"


def test_true_renders_as_a_bare_flag():
    argv = serve_argv(make_model(engine_args={"enforce_eager": True}))
    assert "--enforce-eager" in argv
    assert argv[argv.index("--enforce-eager") + 1:argv.index("--enforce-eager") + 2] != ["True"]


def test_false_renders_as_a_no_flag():
    argv = serve_argv(make_model(engine_args={"enable_prefix_caching": False}))
    assert "--no-enable-prefix-caching" in argv
    assert "--enable-prefix-caching" not in argv


def test_dict_renders_as_json():
    argv = serve_argv(make_model(engine_args={"compilation_config": {"level": 3, "cudagraph": [1, 2]}}))
    assert flag_value(argv, "--compilation-config") == '{"level": 3, "cudagraph": [1, 2]}'


def test_none_is_dropped():
    argv = serve_argv(make_model(engine_args={"quantization": None}))
    assert not any("quantization" in item for item in argv)


def test_scalars_render_as_strings_with_dashed_names():
    argv = serve_argv(make_model(engine_args={"max_model_len": 2048, "gpu_memory_utilization": 0.9,
                                              "dtype": "bfloat16"}))
    assert flag_value(argv, "--max-model-len") == "2048"
    assert flag_value(argv, "--gpu-memory-utilization") == "0.9"
    assert flag_value(argv, "--dtype") == "bfloat16"
    assert not any(item.startswith("--") and "_" in item for item in argv)


# --- CPU thread binding --------------------------------------------------------------

@pytest.mark.parametrize(
    ("world_size", "cores", "expected"),
    [
        (1, [0], "0"),
        (2, [0, 1], "0|1"),
        (2, [0, 1, 2, 3], "0,1|2,3"),
        (2, [3, 1, 2, 0], "0,1|2,3"),
        (4, [4, 5, 6, 7], "4|5|6|7"),
    ],
)
def test_cpu_thread_binding_splits_cores_evenly_across_ranks(world_size, cores, expected):
    assert cpu_thread_binding(world_size, cores) == expected


def test_cpu_thread_binding_never_gives_two_ranks_the_same_core():
    groups = cpu_thread_binding(3, list(range(7))).split("|")
    cores = [core for group in groups for core in group.split(",")]
    assert len(groups) == 3 and len(cores) == len(set(cores))


def test_cpu_thread_binding_needs_a_core_per_rank():
    with pytest.raises(ValueError, match="3"):
        cpu_thread_binding(3, [0, 1])


# --- engine environment --------------------------------------------------------------

def test_engine_env_binds_threads_for_multi_worker_cpu():
    env = engine_env(make_model(2, device="cpu"), cores=[0, 1, 2, 3])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0,1|2,3"


@pytest.mark.parametrize(("device", "tensor"), [("cpu", 1), ("gpu", 1), ("gpu", 4)])
def test_engine_env_leaves_thread_binding_alone_otherwise(device, tensor):
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_env(make_model(tensor, device=device), cores=[0, 1, 2, 3])


def test_engine_env_binds_a_single_cpu_worker_to_the_cores_the_config_names():
    env = engine_env(make_model(1, device="cpu", binding="1"), cores=[0, 1])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"


@pytest.mark.parametrize(("binding", "expected"), [
    ("1", {1}), ("0-3|4-7", set(range(8))), ("0,2|1,3", {0, 1, 2, 3}), ("auto", set()), (None, set()),
])
def test_bound_cores_reads_every_form_of_the_binding(binding, expected):
    assert bound_cores(binding) == expected


def test_engine_env_honours_explicit_cpu_thread_binding():
    env = engine_env(make_model(2, device="cpu", binding="2|3"), cores=[0])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "2|3"


def test_engine_env_lets_model_env_win_over_computed_binding():
    model = make_model(2, device="cpu", binding="2|3", env={"VLLM_CPU_OMP_THREADS_BIND": "5|6"})
    assert engine_env(model, cores=[0, 1])["VLLM_CPU_OMP_THREADS_BIND"] == "5|6"


def test_engine_env_includes_model_env_and_does_not_mutate_it():
    model = make_model(2, device="cpu", env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    env = engine_env(model, cores=[0, 1])
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert model.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}


# --- vLLM's own parser accepts what we render ----------------------------------------

@pytest.mark.e2e
def test_vllm_parser_accepts_the_local_tiny_model_and_a_cpu_tp2_model():
    from serve_app.engines.vllm import parse_serve_args

    tiny = load_config(DEPLOY / "local.yaml").model("tiny-llama")
    assert tiny is not None
    args = parse_serve_args(tiny)
    assert args.max_model_len == 2048
    assert args.enforce_eager
    assert args.served_model_name == ["tiny-llama"]
    assert args.distributed_executor_backend == "uni"

    cpu_tp2 = tiny.model_copy(update={"parallelism": Parallelism(tensor=2)})
    args = parse_serve_args(cpu_tp2)
    assert args.tensor_parallel_size == 2
    assert args.distributed_executor_backend == "mp"


# --- dtype on CPU ----------------------------------------------------------------------

def test_a_cpu_model_without_a_dtype_gets_the_one_its_host_computes_natively():
    assert flag_value(serve_argv(make_model(device="cpu")), "--dtype") == native_cpu_dtype()


def test_a_configured_dtype_wins_on_cpu_and_a_gpu_keeps_vllms_own_default():
    assert flag_value(serve_argv(make_model(device="cpu", engine_args={"dtype": "bfloat16"})),
                      "--dtype") == "bfloat16"
    assert "--dtype" not in serve_argv(make_model(device="gpu"))
