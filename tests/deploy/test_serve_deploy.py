"""`serve deploy` of the rendered Serve config, for real: Ray's CLI sends deploy/serve/simulated.yaml
to a local Ray cluster's dashboard, Serve builds the app from the inline config, and the openai
client talks to it. Only the HTTP port is swapped for a free one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.deploy.cluster import ROOT, free_port, local_cluster, ready, wait_for

pytestmark = pytest.mark.e2e

API_KEY = "sk-deploy-test-0123456789"
ARTIFACT = ROOT / "deploy" / "serve" / "simulated.yaml"
SERVE_CLI = str(Path(sys.executable).parent / "serve")


@dataclass
class Deployed:
    base_url: str
    dashboard: str
    seconds: dict[str, float]


def serve_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SERVE_CLI, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Iterator[Deployed]:
    started = time.monotonic()
    document = yaml.safe_load(ARTIFACT.read_text())
    document["http_options"]["port"] = http_port = free_port()
    config_file = tmp_path_factory.mktemp("serve") / "simulated.yaml"
    config_file.write_text(yaml.safe_dump(document, sort_keys=False))
    saved = os.environ.get("SERVE_APP_API_KEYS")
    os.environ["SERVE_APP_API_KEYS"] = API_KEY  # as the Secret / env file gives it to the Ray nodes
    dashboard_port = free_port()
    try:
        with local_cluster(gpu_nodes=0, head_cpus=2, dashboard_port=dashboard_port):
            up = time.monotonic()
            dashboard = f"http://127.0.0.1:{dashboard_port}"
            result = serve_cli("deploy", str(config_file), "--address", dashboard)
            assert result.returncode == 0, result.stderr
            sent = time.monotonic()
            base_url = f"http://127.0.0.1:{http_port}"
            wait_for(lambda: ready(base_url), 120, "the app answers /ready")
            seconds = {"cluster": up - started, "serve deploy": sent - up, "ready": time.monotonic() - sent}
            print(f"\nserve deploy timings (s): {seconds}")
            yield Deployed(base_url, dashboard, seconds)
    finally:
        if saved is None:
            os.environ.pop("SERVE_APP_API_KEYS", None)
        else:
            os.environ["SERVE_APP_API_KEYS"] = saved


@pytest.fixture
def client(deployed: Deployed) -> openai.OpenAI:
    return openai.OpenAI(base_url=deployed.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_the_app_lists_the_configured_model(client):
    assert [model.id for model in client.models.list().data] == ["sim-llama"]


def test_the_openai_client_gets_a_chat_completion(client):
    completion = client.chat.completions.create(
        model="sim-llama", messages=[{"role": "user", "content": "Hello there"}], max_tokens=8)
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 8


def test_the_openai_client_streams(client):
    stream = client.chat.completions.create(
        model="sim-llama", messages=[{"role": "user", "content": "Hello"}], max_tokens=6, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert len(text.split()) == 6


def test_keys_from_the_environment_are_enforced(deployed):
    response = httpx.post(deployed.base_url + "/v1/chat/completions", timeout=30,
                          json={"model": "sim-llama", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 401
    assert response.json()["error"]["message"]


def test_serve_reports_the_deployments_of_the_artifact(deployed):
    result = serve_cli("status", "--address", deployed.dashboard)
    assert result.returncode == 0, result.stderr
    app = yaml.safe_load(result.stdout)["applications"]["llm"]
    assert app["status"] == "RUNNING"
    assert set(app["deployments"]) == {"LLMServer_sim-llama", "AdmissionController", "Router"}
    assert all(d["status"] == "HEALTHY" for d in app["deployments"].values())
    live = yaml.safe_load(serve_cli("config", "--address", deployed.dashboard).stdout)
    assert live["args"] == yaml.safe_load(ARTIFACT.read_text())["applications"][0]["args"]
