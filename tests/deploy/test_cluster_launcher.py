"""cluster.yaml, specified: Ray's own launcher validation accepts it, and it says what we mean."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from serve_app import render
from serve_app.config import load_config
from serve_app.ray_env import ray_environment
from tests.deploy.cluster import ROOT

NEMOTRON = load_config(ROOT / "deploy" / "nemotron-70b.yaml")


@pytest.fixture
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def validate(cluster: dict) -> dict:
    """What `ray up` does before it touches a cloud: merge the provider's defaults, validate."""
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    return prepared


def test_rays_launcher_validation_accepts_it(cluster):
    prepared = validate(cluster)
    assert prepared["head_node_type"] == "head"
    assert prepared["provider"]["type"] == "aws"


def test_the_validation_bites_on_a_typo(cluster):
    cluster["available_node_types"]["head"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate(cluster)


def test_the_head_is_a_cpu_node_that_runs_no_gpu_work(cluster):
    head = cluster["available_node_types"]["head"]
    assert head["resources"]["GPU"] == 0
    assert head["max_workers"] == 0
    (start,) = [c for c in cluster["head_start_ray_commands"] if "ray start" in c]
    assert "--head" in start and "--num-gpus=0" in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


def test_gpu_workers_have_eight_gpus_and_scale_from_zero_to_what_max_replicas_needs(cluster):
    (gpu_type,) = [name for name in cluster["available_node_types"] if name != "head"]
    gpu = cluster["available_node_types"][gpu_type]
    assert gpu["resources"]["GPU"] == 8
    assert gpu["node_config"]["InstanceType"] == "p5.48xlarge"
    assert gpu["min_workers"] == 0
    # 8 replicas x TP=4, two replicas per 8-GPU node
    assert gpu["max_workers"] == cluster["max_workers"] == 4
    assert cluster["idle_timeout_minutes"] > 0


def test_every_ray_process_starts_with_the_serving_environment(cluster):
    env = ray_environment(NEMOTRON)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    for commands in (cluster["head_start_ray_commands"], cluster["worker_start_ray_commands"]):
        (start,) = [c for c in commands if "ray start" in c]
        exports = start[:start.index("ray start")]
        for name, value in env.items():
            assert f"{name}={value}" in exports
        assert f". ~/{render.ENV_FILE}" in exports  # API keys and HF token
    assert cluster["file_mounts"] == {f"~/{render.ENV_FILE}": f"./{render.ENV_FILE}"}


def test_nodes_run_the_serving_image_and_check_it_first(cluster):
    assert cluster["docker"]["image"] == render.Infra().image
    assert any("import ray, serve_app, vllm" in c for c in cluster["setup_commands"])
