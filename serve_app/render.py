"""Render the deployable artifacts from an app config: the config is the one source of truth.

    python -m serve_app.render                  # rewrite every artifact in ARTIFACTS
    python -m serve_app.render --check          # exit 1 naming each stale artifact (a test runs this)
    python -m serve_app.render --config deploy/nemotron-70b.yaml      # only that config's artifacts
    python -m serve_app.render --config my.yaml --kind kuberay --image REGISTRY/serve-app:TAG --stdout

Three kinds of artifact, each a pure function of an `AppConfig` and an `Infra` (where it runs:
image, node types; not part of the app config):

serve    a Serve config for `serve deploy`: our builder's import path, the app config inline as
         its argument, HTTP options, and every deployment's options exactly as the builder sets
         them (computed by Ray's own `serve build` machinery, so they cannot drift from the code).
cluster  a Ray cluster launcher config (`ray up`): a CPU head and an 8-GPU worker type scaling
         from 0, the serving image, and `ray_environment(config)` exported where Ray starts.
kuberay  a KubeRay `RayService` whose `serveConfigV2` is the serve artifact, with in-tree
         autoscaling, a GPU worker group, Secrets, ports and probes.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from serve_app.config import AppConfig, ConfigError, ModelConfig, load_config
from serve_app.placement import replica_bundles
from serve_app.ray_env import PER_INSTANCE, ray_environment

Kind = Literal["serve", "cluster", "kuberay"]
IMPORT_PATH = "serve_app.app:build_app"
RAY_VERSION = "2.60.0"
SECRET_NAME = "serve-app"
"""Kubernetes Secret (keys `api-keys`, `hf-token`) and, for `ray up`, the env file it mirrors."""
ENV_FILE = "serve-app.env"
HF_HOME = "/home/ray/.cache/huggingface"


@dataclass(frozen=True)
class Infra:
    """Where the app runs. Defaults: AWS, 8 x H100 80 GB per GPU node (p5.48xlarge)."""

    image: str = f"registry.example.com/serve-app:0.1.0-ray{RAY_VERSION}-py311-gpu"
    region: str = "us-west-2"
    head_instance: str = "m7i.4xlarge"
    head_cpus: int = 16
    gpu_instance: str = "p5.48xlarge"
    gpus_per_node: int = 8
    gpu_node_cpus: int = 192
    gpu_pod_cpus: int = 176
    """CPUs a GPU worker pod asks Kubernetes for (the node's allocatable, less system pods)."""
    gpu_pod_memory_gib: int = 1600
    hf_cache_gib: int = 600
    """Disk for checkpoints on a GPU node/pod (Nemotron-70B in bf16 is 141 GB)."""
    idle_timeout_s: int = 600
    """An empty GPU node is released after this long."""
    head_pod_cpus: int = 8
    head_pod_memory_gib: int = 32


@dataclass(frozen=True)
class Artifact:
    path: str
    kind: Kind
    source: str
    """The app config it is rendered from; paths are relative to the repository root."""


ARTIFACTS = (
    Artifact("deploy/serve/nemotron-70b.yaml", "serve", "deploy/nemotron-70b.yaml"),
    Artifact("deploy/serve/simulated.yaml", "serve", "deploy/simulated.yaml"),
    Artifact("deploy/kuberay/rayservice.yaml", "kuberay", "deploy/nemotron-70b.yaml"),
    Artifact("cluster.yaml", "cluster", "deploy/nemotron-70b.yaml"),
)


# --- serve: the config `serve deploy` takes ---------------------------------------------

def config_mapping(config: AppConfig) -> dict[str, Any]:
    """The app config as the YAML that produced it wrote it (unset keys keep their defaults)."""
    return config.model_dump(mode="json", exclude_unset=True)


def deployment_options(config: AppConfig) -> list[dict[str, Any]]:
    """Every deployment's options as the builder sets them, the way `serve build` writes them."""
    from ray.serve._private.build_app import build_app
    from ray.serve.deployment import deployment_to_schema

    from serve_app.app import APP_NAME, build_application

    built = build_app(build_application(config), name=APP_NAME)
    return [deployment_to_schema(deployment).model_dump(mode="json", exclude_unset=True)
            for deployment in built.deployments]


def serve_config(config: AppConfig) -> dict[str, Any]:
    """A `ServeDeploySchema` document: self-contained, the app config travels inline."""
    from serve_app.app import APP_NAME

    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": config.http.host, "port": config.http.port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            "args": {"config_inline": config_mapping(config)},
            "deployments": deployment_options(config),
        }],
    }


# --- how many GPU nodes the config can ask for ------------------------------------------

def gpus_per_replica(model: ModelConfig) -> int:
    return round(sum(bundle.get("GPU", 0.0) for bundle in replica_bundles(model)))


def replicas_per_node(model: ModelConfig, gpus_per_node: int) -> float:
    """Replicas of a model one GPU node holds; strict_pack replicas never straddle nodes."""
    gpus = gpus_per_replica(model)
    if model.parallelism.placement == "strict_pack":
        if gpus > gpus_per_node:
            raise ConfigError(f"{model.name}: strict_pack needs {gpus} GPUs on one node, "
                              f"a node has {gpus_per_node}")
        return gpus_per_node // gpus
    return gpus_per_node / gpus


def max_gpu_nodes(config: AppConfig, infra: Infra) -> int:
    """GPU nodes needed when every model that reserves GPUs runs at max_replicas (at least 1)."""
    nodes = sum(math.ceil(model.autoscaling.max_replicas / replicas_per_node(model, infra.gpus_per_node))
                for model in config.models if gpus_per_replica(model))
    return max(nodes, 1)


# --- cluster: the Ray cluster launcher config -------------------------------------------

def cluster_environment(config: AppConfig) -> dict[str, str]:
    """`ray_environment(config)` for every node of a real cluster, where nothing may be left to
    chance: what ray_env picks anew for each local Ray instance (free ports) must be fixed."""
    env, again = ray_environment(config), ray_environment(config)
    varying = sorted(name for name, value in env.items() if again.get(name) != value)
    if varying:
        raise ConfigError(f"a cluster needs fixed values for {varying}: set them in the config's "
                          "http section (a local config may leave them to each Ray instance)")
    return env


def _exports(config: AppConfig) -> str:
    env = " ".join(f"{name}={shlex.quote(value)}" for name, value in sorted(cluster_environment(config).items()))
    # Keys and HF token come from the env file `file_mounts` copies to every node.
    return f"set -a; . ~/{ENV_FILE}; set +a; export {env}"


def cluster_config(config: AppConfig, infra: Infra, name: str) -> dict[str, Any]:
    gpu_nodes = max_gpu_nodes(config, infra)
    head_start = ("ray start --head --port=6379 --num-gpus=0 --object-manager-port=8076"
                  " --autoscaling-config=~/ray_bootstrap_config.yaml --dashboard-host=0.0.0.0")
    worker_start = "ray start --address=$RAY_HEAD_IP:6379 --object-manager-port=8076"
    return {
        "cluster_name": f"serve-app-{name}",
        "max_workers": gpu_nodes,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": infra.idle_timeout_s // 60,
        "docker": {
            "image": infra.image,
            "container_name": "serve_app",
            "pull_before_run": True,
            "run_options": ["--ulimit nofile=65536:65536"],
        },
        "provider": {"type": "aws", "region": infra.region, "cache_stopped_nodes": False},
        "auth": {"ssh_user": "ubuntu"},
        "head_node_type": "head",
        "available_node_types": {
            "head": {
                "resources": {"CPU": infra.head_cpus, "GPU": 0},
                "node_config": {"InstanceType": infra.head_instance,
                                "BlockDeviceMappings": [_ebs(200)]},
                "min_workers": 0,
                "max_workers": 0,
            },
            _gpu_group(infra): {
                "resources": {"CPU": infra.gpu_node_cpus, "GPU": infra.gpus_per_node},
                "node_config": {"InstanceType": infra.gpu_instance,
                                "BlockDeviceMappings": [_ebs(infra.hf_cache_gib + 200)]},
                "min_workers": 0,
                "max_workers": gpu_nodes,
            },
        },
        "file_mounts": {f"~/{ENV_FILE}": f"./{ENV_FILE}"},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        # The image carries everything; this only fails fast on a wrong one.
        "setup_commands": [
            f"python -c 'import ray, serve_app, vllm; assert ray.__version__ == \"{RAY_VERSION}\"'"],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": ["ray stop", f"ulimit -n 65536; {_exports(config)}; {head_start}"],
        "worker_start_ray_commands": ["ray stop", f"ulimit -n 65536; {_exports(config)}; {worker_start}"],
    }


def _ebs(size_gib: int) -> dict[str, Any]:
    return {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": size_gib, "VolumeType": "gp3"}}


def _gpu_group(infra: Infra) -> str:
    return f"gpu-{infra.gpus_per_node}x"


# --- kuberay: the RayService ------------------------------------------------------------

HEAD_PROBE = ("wget -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success"
              " && wget -T 2 -q -O- http://localhost:8265/api/gcs_healthz | grep success")
WORKER_PROBE = "wget -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success"


def rayservice(config: AppConfig, infra: Infra, name: str) -> dict[str, Any]:
    serve_yaml = yaml.dump(serve_config(config), Dumper=_Dumper, sort_keys=False, width=100)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "serve-app"}},
        "spec": {
            "serveConfigV2": serve_yaml,
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": infra.idle_timeout_s},
                "headGroupSpec": {
                    # The head runs the controller, proxies, routers and admission: no GPUs.
                    "rayStartParams": {"num-gpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {"spec": {"containers": [_head_container(config, infra)]}},
                },
                "workerGroupSpecs": [_gpu_worker_group(config, infra)],
            },
        },
    }


def _env(config: AppConfig) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": key, "value": value}
                                 for key, value in sorted(cluster_environment(config).items())]
    if config.auth.keys_env:
        env.append({"name": config.auth.keys_env, "valueFrom": {
            "secretKeyRef": {"name": SECRET_NAME, "key": "api-keys"}}})
    env.append({"name": "HF_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": SECRET_NAME, "key": "hf-token", "optional": True}}})
    env.append({"name": "HF_HOME", "value": HF_HOME})
    return env


def _probes(command: str) -> dict[str, Any]:
    probe = {"exec": {"command": ["bash", "-c", command]}, "periodSeconds": 5, "timeoutSeconds": 2}
    return {
        "readinessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 10},
        "livenessProbe": {**probe, "initialDelaySeconds": 30, "failureThreshold": 120},
    }


def _resources(cpus: int, memory_gib: int, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _head_container(config: AppConfig, infra: Infra) -> dict[str, Any]:
    return {
        "name": "ray-head",
        "image": infra.image,
        "env": _env(config),
        "ports": [
            {"name": "gcs", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            {"name": "client", "containerPort": 10001},
            {"name": "serve", "containerPort": config.http.port},
        ],
        "resources": _resources(infra.head_pod_cpus, infra.head_pod_memory_gib),
        **_probes(HEAD_PROBE),
    }


def _gpu_worker_group(config: AppConfig, infra: Infra) -> dict[str, Any]:
    container = {
        "name": "ray-worker",
        "image": infra.image,
        "env": _env(config),
        "ports": [{"name": "serve", "containerPort": config.http.port}],
        "resources": _resources(infra.gpu_pod_cpus, infra.gpu_pod_memory_gib, infra.gpus_per_node),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "hf-cache", "mountPath": HF_HOME}],
        **_probes(WORKER_PROBE),
    }
    return {
        "groupName": _gpu_group(infra),
        "replicas": 0,
        "minReplicas": 0,
        "maxReplicas": max_gpu_nodes(config, infra),
        "rayStartParams": {},
        "template": {"spec": {
            "containers": [container],
            # NCCL between the tensor-parallel workers needs a large shared-memory segment.
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}},
                        {"name": "hf-cache", "emptyDir": {"sizeLimit": f"{infra.hf_cache_gib}Gi"}}],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"node.kubernetes.io/instance-type": infra.gpu_instance},
        }},
    }


# --- writing --------------------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    """Block style, except small flat mappings ({CPU: 1.0}, {name: X, value: '1'}) on one line;
    multi-line strings (serveConfigV2) as literal blocks; no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    flat = 0 < len(data) <= 4 and all(not isinstance(v, (dict, list)) for v in data.values())
    flat = flat and sum(len(str(k)) + len(str(v)) for k, v in data.items()) < 60
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flat)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(str, _represent_str)


def document(artifact: Artifact, config: AppConfig, infra: Infra) -> dict[str, Any]:
    name = Path(artifact.source).stem
    if artifact.kind == "serve":
        return serve_config(config)
    if artifact.kind == "cluster":
        return cluster_config(config, infra, name)
    return rayservice(config, infra, name)


def header(artifact: Artifact, config: AppConfig) -> str:
    lines = [f"Rendered from {artifact.source} by `python -m serve_app.render`: do not edit;",
             "edit the source and re-render (a test fails when this file is stale)."]
    if artifact.kind == "serve":
        lines += ["Serve config for `serve deploy` (or the Python equivalent). Every Ray process of the",
                  "cluster must start with the environment serve_app.ray_env gives this config:"]
        lines += [f"  {name}={value}" for name, value in sorted(_documented_environment(config).items())]
    elif artifact.kind == "cluster":
        lines.append(f"Ray cluster launcher config: `ray up {artifact.path}` (see deploy/README.md).")
    else:
        lines.append(f"KubeRay RayService: `kubectl apply -f {artifact.path}` (see deploy/README.md).")
    return "".join(f"# {line}\n" for line in lines)


def _documented_environment(config: AppConfig) -> dict[str, str]:
    try:
        return cluster_environment(config)
    except ConfigError:  # a local config: some values are picked by each Ray instance
        return {name: "<per Ray instance>" if name in PER_INSTANCE else value
                for name, value in ray_environment(config).items()}


def render(artifact: Artifact, root: Path, infra: Infra = Infra()) -> str:
    """The full text of one artifact."""
    config = load_config(root / artifact.source)
    body = yaml.dump(document(artifact, config, infra), Dumper=_Dumper, sort_keys=False, width=100)
    return header(artifact, config) + body


UNLISTED_PATHS: dict[Kind, str] = {
    "serve": "deploy/serve/{stem}.yaml",
    "cluster": "deploy/cluster/{stem}.yaml",
    "kuberay": "deploy/kuberay/{stem}.yaml",
}


def selected(config: str | None, kind: Kind | None) -> list[Artifact]:
    """The artifacts of ARTIFACTS rendered from `config` (all of them when None); for a config
    ARTIFACTS does not list, one of each kind at UNLISTED_PATHS."""
    chosen = [a for a in ARTIFACTS if config is None or Path(a.source) == Path(config)]
    if config is not None and not chosen:
        stem = Path(config).stem
        chosen = [Artifact(path.format(stem=stem), k, config) for k, path in UNLISTED_PATHS.items()]
    return [a for a in chosen if kind is None or a.kind == kind]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="an app config (default: every source in ARTIFACTS)")
    parser.add_argument("--kind", choices=["serve", "cluster", "kuberay"], help="only this kind of artifact")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if an artifact is stale")
    parser.add_argument("--stdout", action="store_true", help="print instead of writing")
    parser.add_argument("--image", default=Infra.image, help="the serving image (default: %(default)s)")
    parser.add_argument("--root", default=".", help="repository root the paths are relative to")
    args = parser.parse_args(argv)
    root, infra = Path(args.root), Infra(image=args.image)
    stale = []
    try:
        for artifact in selected(args.config, args.kind):
            text = render(artifact, root, infra)
            target = root / artifact.path
            if args.stdout:
                sys.stdout.write(text)
            elif args.check:
                if not target.exists() or target.read_text() != text:
                    stale.append(artifact)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                print(f"wrote {artifact.path} from {artifact.source}")
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    for artifact in stale:
        print(f"stale: {artifact.path} (re-render from {artifact.source}: python -m serve_app.render)",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
