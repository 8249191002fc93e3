"""The configuration schema, specified: shipped configs load; bad ones fail naming key path and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serve_app.config import AppConfig, ConfigError, load_config, parse_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def write(tmp_path: Path, data: object, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def model(**overrides: object) -> dict:
    return {"name": "m", "source": "org/m", **overrides}


def load_error(tmp_path: Path, data: object, name: str = "cluster.yaml") -> str:
    path = write(tmp_path, data, name)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


# --- the shipped configs ---------------------------------------------------------------

def test_local_config_loads_the_tiny_model_on_cpu():
    config = load_config(DEPLOY / "local.yaml")
    assert isinstance(config, AppConfig)
    tiny = config.model("tiny-llama")
    assert tiny is not None
    assert tiny.device == "cpu"
    assert tiny.engine == "vllm"
    assert tiny.parallelism.world_size == 1
    assert tiny.engine_args["max_model_len"] == 2048
    assert config.model("no-such-model") is None


def test_nemotron_config_loads_when_present():
    path = DEPLOY / "nemotron-70b.yaml"
    if not path.exists():
        pytest.skip("deploy/nemotron-70b.yaml not present")
    config = load_config(path)
    assert config.models
    assert all(entry.device == "gpu" for entry in config.models)
    assert config.auth.required


def test_minimal_config_fills_documented_defaults():
    config = parse_config({"models": [model()]})
    entry = config.models[0]
    assert entry.engine == "vllm" and entry.device == "gpu"
    assert entry.parallelism.tensor == 1 and entry.parallelism.pipeline == 1
    assert entry.parallelism.placement == "strict_pack"
    assert entry.limits.output_tokens_when_unset == entry.limits.max_output_tokens == 4096
    assert config.http.port == 8000


# --- errors name the key path and the file ----------------------------------------------

def test_unknown_key_is_named_with_its_path_and_the_file(tmp_path):
    message = load_error(tmp_path, {"models": [model(parallelism={"tensor": 2, "tensr": 4})]})
    assert "models.0.parallelism.tensr" in message
    assert "cluster.yaml" in message


def test_unknown_top_level_key_is_named(tmp_path):
    message = load_error(tmp_path, {"models": [model()], "routr": {"replicas": 2}})
    assert "routr" in message and "cluster.yaml" in message


def test_wrong_type_is_named_with_its_path_and_the_file(tmp_path):
    message = load_error(tmp_path, {"models": [model(parallelism={"tensor": "two"})]})
    assert "models.0.parallelism.tensor" in message
    assert "cluster.yaml" in message


def test_wrong_type_for_a_mapping_is_named(tmp_path):
    message = load_error(tmp_path, {"models": [model(env={"A": ["not", "a", "string"]})]})
    assert "models.0.env.A" in message and "cluster.yaml" in message


@pytest.mark.parametrize("value", [True, "4"], ids=["bool", "quoted-number"])
def test_a_bool_or_string_is_not_a_worker_count(tmp_path, value):
    message = load_error(tmp_path, {"models": [model(parallelism={"tensor": value})]})
    assert "models.0.parallelism.tensor" in message


def test_a_string_is_not_a_boolean(tmp_path):
    message = load_error(tmp_path, {"models": [model()], "auth": {"required": "yes"}})
    assert "auth.required" in message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"models": [model(parallelism={"tensor": 0})]}, "models.0.parallelism.tensor"),
        ({"models": [model(parallelism={"pipeline": -1})]}, "models.0.parallelism.pipeline"),
        ({"models": [model(limits={"max_output_tokens": 0})]}, "models.0.limits.max_output_tokens"),
        ({"models": [model(health_check_period_s=0)]}, "models.0.health_check_period_s"),
        ({"models": [model(resources={"num_cpus": -0.5})]}, "models.0.resources.num_cpus"),
        ({"models": [model()], "http": {"port": 70000}}, "http.port"),
        ({"models": [model()], "admission": {"max_in_flight": 0}}, "admission.max_in_flight"),
        ({"models": [model(name="")]}, "models.0.name"),
        ({"models": []}, "models"),
    ],
    ids=["tensor-0", "pipeline-negative", "max-output-0", "health-period-0", "negative-cpus",
         "port-too-big", "max-in-flight-0", "empty-name", "no-models"],
)
def test_out_of_range_value_is_named(tmp_path, data, key):
    message = load_error(tmp_path, data)
    assert f"  {key}:" in message
    assert "cluster.yaml" in message


def test_invalid_enum_value_is_named(tmp_path):
    message = load_error(tmp_path, {"models": [model(parallelism={"placement": "scatter"})]})
    assert "models.0.parallelism.placement" in message


def test_min_replicas_above_max_replicas_is_refused(tmp_path):
    message = load_error(tmp_path, {"models": [model(autoscaling={"min_replicas": 3, "max_replicas": 2})]})
    assert "models.0.autoscaling" in message
    assert "min_replicas" in message and "cluster.yaml" in message


def test_initial_replicas_outside_min_max_is_refused(tmp_path):
    message = load_error(tmp_path, {"models": [model(
        autoscaling={"min_replicas": 1, "max_replicas": 2, "initial_replicas": 5})]})
    assert "models.0.autoscaling" in message and "initial_replicas" in message


def test_default_output_tokens_above_cap_is_refused(tmp_path):
    message = load_error(tmp_path, {"models": [model(
        limits={"max_output_tokens": 100, "default_output_tokens": 200})]})
    assert "models.0.limits" in message and "default_output_tokens" in message


@pytest.mark.parametrize(
    "owned",
    ["model", "tensor_parallel_size", "pipeline_parallel_size",
     "distributed_executor_backend", "served_model_name"],
)
def test_engine_args_may_not_set_keys_the_config_owns(tmp_path, owned):
    message = load_error(tmp_path, {"models": [model(engine_args={owned: 1, "dtype": "bfloat16"})]})
    assert "models.0.engine_args" in message
    assert owned in message and "cluster.yaml" in message


def test_other_engine_args_pass_through_unchanged():
    args = {"dtype": "bfloat16", "max_model_len": 8192, "compilation_config": {"level": 3}}
    assert parse_config({"models": [model(engine_args=args)]}).models[0].engine_args == args


def test_duplicate_model_names_are_refused(tmp_path):
    message = load_error(tmp_path, {"models": [model(name="a"), model(name="b"), model(name="a")]})
    assert "  models:" in message
    assert "'a'" in message and "'b'" not in message
    assert "cluster.yaml" in message


def test_api_key_hash_must_be_hex_sha256(tmp_path):
    message = load_error(tmp_path, {"models": [model()], "auth": {"keys": [{"sha256": "secret"}]}})
    assert "auth.keys.0.sha256" in message


def test_several_errors_are_reported_at_once(tmp_path):
    message = load_error(tmp_path, {
        "models": [model(parallelism={"tensor": 0}), model(name="n", device="tpu")],
        "http": {"port": 0},
        "extra": True,
    })
    for key in ("models.0.parallelism.tensor", "models.1.device", "http.port", "extra"):
        assert f"  {key}:" in message
    assert message.count("cluster.yaml") == 1


# --- files that are not configs at all --------------------------------------------------

@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", ""],
                         ids=["list", "string", "number", "empty"])
def test_non_mapping_yaml_is_refused_naming_the_file(tmp_path, text):
    message = load_error(tmp_path, text, name="odd.yaml")
    assert "odd.yaml" in message and "mapping" in message


def test_invalid_yaml_is_refused_naming_the_file(tmp_path):
    message = load_error(tmp_path, "models: [unclosed\n  name: : :\n", name="broken.yaml")
    assert "broken.yaml" in message and "YAML" in message


def test_missing_file_is_refused_naming_the_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nowhere.yaml")
    assert "nowhere.yaml" in str(caught.value)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_config({"models": "not a list"}, "inline")


def test_loaded_config_is_immutable():
    config = parse_config({"models": [model()]})
    with pytest.raises(Exception):
        config.models[0].parallelism.tensor = 8  # type: ignore[misc]
