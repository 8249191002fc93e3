"""deploy/kuberay/rayservice.yaml, specified: the RayService CRD's schema accepts it (unknown
fields refused, as `kubectl apply --validate=strict` does), its serveConfigV2 is our Serve
config, and the cluster around it is the one the config needs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app import render
from serve_app.config import load_config
from serve_app.ray_env import ray_environment
from tests.deploy.cluster import ROOT

CRD = Path("/work/shared/schemas/kuberay/ray.io_rayservices.yaml")
NEMOTRON = load_config(ROOT / "deploy" / "nemotron-70b.yaml")


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever the API server would prune them."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"] and v["storage"]]
    return jsonschema.Draft7Validator(strict(served["schema"]["openAPIV3Schema"]))


@pytest.fixture
def manifest() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "kuberay" / "rayservice.yaml").read_text())


def errors(validator: jsonschema.Draft7Validator, manifest: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def pods(manifest: dict) -> dict[str, dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    specs = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    specs |= {g["groupName"]: g["template"]["spec"] for g in cluster["workerGroupSpecs"]}
    return specs


def test_the_crd_schema_accepts_it(validator, manifest):
    assert errors(validator, manifest) == []
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert manifest["metadata"]["name"] == "nemotron-70b"


@pytest.mark.parametrize(("path", "value"), [
    (("spec", "rayClusterConfig", "enableInTreeAutoscale"), True),             # typo
    (("spec", "rayClusterConfig", "workerGroupSpecs", 0, "maxReplicas"), "4"),  # wrong type
    (("spec", "serveConfigV2"), {"applications": []}),                        # must be a string
])
def test_the_schema_check_bites(validator, manifest, path, value):
    broken = copy.deepcopy(manifest)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert errors(validator, broken)


def test_serve_config_v2_is_the_serve_artifact_and_passes_serves_schema(manifest):
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    assert serve_config == yaml.safe_load((ROOT / "deploy" / "serve" / "nemotron-70b.yaml").read_text())
    assert serve_config["http_options"]["host"] == "0.0.0.0"  # reachable from the Service


def test_in_tree_autoscaling_drives_a_gpu_group_from_zero(manifest):
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == render.RAY_VERSION
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"] == 4
    (worker,) = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert worker["resources"]["requests"] == worker["resources"]["limits"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        group["template"]["spec"]["tolerations"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in worker["volumeMounts"]


def test_the_head_has_no_gpus(manifest):
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    (container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


@pytest.mark.parametrize("pod", ["head", "gpu-8x"])
def test_every_pod_gets_the_ray_environment_keys_and_hf_token(manifest, pod):
    (container,) = pods(manifest)[pod]["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name, value in ray_environment(NEMOTRON).items():
        assert env[name]["value"] == value
    keys = env[NEMOTRON.auth.keys_env]["valueFrom"]["secretKeyRef"]
    assert (keys["name"], keys["key"]) == (render.SECRET_NAME, "api-keys")
    token = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (token["name"], token["key"]) == (render.SECRET_NAME, "hf-token")
    assert container["image"] == render.Infra().image


@pytest.mark.parametrize("pod", ["head", "gpu-8x"])
def test_every_pod_has_probes_and_the_serve_port(manifest, pod):
    (container,) = pods(manifest)[pod]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["serve"] == NEMOTRON.http.port
    if pod == "head":
        assert {ports["gcs"], ports["dashboard"], ports["client"]} == {6379, 8265, 10001}
    for probe in ("readinessProbe", "livenessProbe"):
        assert "local_raylet_healthz" in container[probe]["exec"]["command"][-1]
