"""The rendered artifacts, specified: fresh, deterministic, and the app config's own numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app import render
from serve_app.app import build_app
from serve_app.config import ConfigError, load_config, parse_config
from serve_app.placement import placement_strategy, replica_bundles
from serve_app.server import deployment_name
from tests.deploy.cluster import ROOT

SERVE_ARTIFACTS = [a for a in render.ARTIFACTS if a.kind == "serve"]


def load_artifact(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


def test_committed_artifacts_are_fresh(capsys):
    status = render.main(["--check", "--root", str(ROOT)])
    assert status == 0, f"{capsys.readouterr().err}run: python -m serve_app.render"


def test_check_names_a_stale_artifact_and_rendering_fixes_it(tmp_path, capsys):
    for artifact in render.ARTIFACTS:
        for path in (artifact.source, artifact.path):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / path, tmp_path / path)
    source = tmp_path / "deploy" / "nemotron-70b.yaml"
    text = source.read_text()
    assert "max_replicas: 8" in text
    source.write_text(text.replace("max_replicas: 8", "max_replicas: 6"))

    assert render.main(["--check", "--root", str(tmp_path)]) == 1
    stale = capsys.readouterr().err
    assert "deploy/serve/nemotron-70b.yaml" in stale and "cluster.yaml" in stale
    assert "deploy/kuberay/rayservice.yaml" in stale and "simulated.yaml" not in stale

    assert render.main(["--root", str(tmp_path)]) == 0
    assert render.main(["--check", "--root", str(tmp_path)]) == 0
    assert load_artifact_at(tmp_path, "cluster.yaml")["max_workers"] == 3  # 6 replicas, 2 per node


def load_artifact_at(root: Path, path: str) -> dict:
    return yaml.safe_load((root / path).read_text())


def test_rendering_is_deterministic():
    for artifact in render.ARTIFACTS:
        assert render.render(artifact, ROOT) == render.render(artifact, ROOT), artifact.path


@pytest.mark.parametrize("artifact", SERVE_ARTIFACTS, ids=lambda a: a.path)
def test_serve_artifact_passes_rays_own_schema(artifact):
    schema = ServeDeploySchema.model_validate(load_artifact(artifact.path))
    (app,) = schema.applications
    assert app.import_path == "serve_app.app:build_app"
    assert app.route_prefix == "/" and app.name == "llm"
    assert sorted(app.deployment_names) == sorted(
        ["Router", "AdmissionController"] + [deployment_name(m) for m in load_config(ROOT / artifact.source).models])


@pytest.mark.parametrize("artifact", SERVE_ARTIFACTS, ids=lambda a: a.path)
def test_the_inline_config_is_the_source_config(artifact):
    (app,) = load_artifact(artifact.path)["applications"]
    inline = parse_config(app["args"]["config_inline"], "config_inline")
    assert inline == load_config(ROOT / artifact.source)
    build_app(app["args"])  # the builder accepts it as `serve deploy` will pass it


def test_http_options_come_from_the_config():
    document = load_artifact("deploy/serve/nemotron-70b.yaml")
    config = load_config(ROOT / "deploy/nemotron-70b.yaml")
    assert document["http_options"] == {"host": config.http.host, "port": config.http.port}


def test_nemotron_deployments_carry_the_configs_placement_and_autoscaling():
    config = load_config(ROOT / "deploy/nemotron-70b.yaml")
    (model,) = config.models
    (app,) = load_artifact("deploy/serve/nemotron-70b.yaml")["applications"]
    options = {d["name"]: d for d in app["deployments"]}
    server = options[deployment_name(model)]
    assert server["placement_group_bundles"] == replica_bundles(model)
    assert server["placement_group_bundles"][1:] == [{"GPU": 1.0, "CPU": 4.0}] * 4
    assert server["placement_group_strategy"] == placement_strategy(model) == "STRICT_PACK"
    assert server["max_ongoing_requests"] == model.autoscaling.max_ongoing_requests
    scaling = server["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 8)
    assert scaling["target_ongoing_requests"] == 48
    assert (scaling["upscale_delay_s"], scaling["downscale_delay_s"]) == (30, 600)
    assert server["graceful_shutdown_timeout_s"] == model.graceful_shutdown_timeout_s
    assert options["Router"]["num_replicas"] == config.router.replicas == 2
    assert options["Router"]["ray_actor_options"] == {"num_cpus": config.router.num_cpus}
    # a stopping router relays its streams as long as the replica behind it lets them run
    assert options["Router"]["graceful_shutdown_timeout_s"] == (config.http.drain_period_s
                                                                + model.graceful_shutdown_timeout_s)
    assert options["AdmissionController"]["num_replicas"] == 1


@pytest.mark.parametrize(
    ("parallelism", "max_replicas", "nodes"),
    [({"tensor": 4}, 8, 4), ({"tensor": 4}, 3, 2), ({"tensor": 8}, 8, 8), ({"tensor": 1}, 9, 2),
     ({"tensor": 8, "pipeline": 2, "placement": "pack"}, 2, 4)],
    ids=["tp4x8", "tp4x3", "tp8x8", "tp1x9", "tp8pp2-pack"])
def test_gpu_nodes_needed_at_max_replicas(parallelism, max_replicas, nodes):
    config = parse_config({"models": [{"name": "m", "source": "org/m", "parallelism": parallelism,
                                       "autoscaling": {"max_replicas": max_replicas}}]})
    assert render.max_gpu_nodes(config, render.Infra()) == nodes


def test_a_strict_pack_replica_larger_than_a_node_is_refused():
    config = parse_config({"models": [{"name": "m", "source": "org/m",
                                       "parallelism": {"tensor": 8, "pipeline": 2}}]})
    with pytest.raises(ConfigError, match="strict_pack needs 16 GPUs on one node"):
        render.max_gpu_nodes(config, render.Infra())


def test_a_cluster_artifact_refuses_per_instance_random_ports():
    config = parse_config({"models": [{"name": "m", "source": "org/m"}],
                           "http": {"haproxy_metrics_port": 0, "haproxy_stats_port": 0, "replica_ports": None}})
    with pytest.raises(ConfigError, match="a cluster needs fixed values for"):
        render.cluster_config(config, render.Infra(), "m")


def test_any_config_renders_to_stdout_with_another_image(capsys):
    status = render.main(["--root", str(ROOT), "--config", "deploy/nemotron-70b.yaml", "--kind", "kuberay",
                          "--image", "my.registry/serve-app:dev", "--stdout"])
    assert status == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    containers = [manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]]
    containers += [g["template"]["spec"]["containers"][0]
                   for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    assert {c["image"] for c in containers} == {"my.registry/serve-app:dev"}


def test_unlisted_configs_go_next_to_the_listed_ones():
    chosen = render.selected("deploy/local.yaml", None)
    assert [(a.kind, a.path) for a in chosen] == [
        ("serve", "deploy/serve/local.yaml"), ("cluster", "deploy/cluster/local.yaml"),
        ("kuberay", "deploy/kuberay/local.yaml")]
    assert [a.path for a in render.selected("deploy/nemotron-70b.yaml", "serve")] == [
        "deploy/serve/nemotron-70b.yaml"]


def test_a_bad_source_config_is_reported_not_rendered(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("models: [{name: m}]\n")
    assert render.main(["--root", str(tmp_path), "--config", "bad.yaml", "--stdout"]) == 2
    assert "models.0.source" in capsys.readouterr().err
