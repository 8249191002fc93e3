"""`make serve` serves deploy/local.yaml on 127.0.0.1 and Ctrl-C shuts everything down."""

from __future__ import annotations

import sys
import time

import yaml
from openai import OpenAI

from tests.e2e.serve_process import cmdline, descendants_titled, serving
from tests.e2e.stack import ROOT


def test_make_serve_answers_the_openai_client_and_stops_cleanly(tiny_model, tmp_path):
    with serving(["make", "-s", "serve", "PORT={port}"], tmp_path / "serve.log") as (base_url, process):
        client = OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
        assert [model.id for model in client.models.list().data] == ["tiny-llama"]
        answer = client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert answer.choices[0].message.content
        streamed = client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert "shutting down" in (tmp_path / "serve.log").read_text()


def tensor_parallel_workers(pid: int, timeout_s: float = 60.0) -> list[str]:
    """Command lines of vLLM's rank processes under `pid` (titles are set as they start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        workers = [cmdline(worker) for worker in descendants_titled(pid, "Worker_TP")]
        if len(workers) >= 2 or time.monotonic() > deadline:
            return workers
        time.sleep(1)


def test_tensor_parallel_two_on_cpu_serves_end_to_end(tiny_model, tmp_path):
    config = yaml.safe_load((ROOT / "deploy" / "local.yaml").read_text())
    model = config["models"][0]
    model["parallelism"] = {"tensor": 2, "pipeline": 1, "executor": "auto"}
    model["resources"] = {"num_cpus": 0.1, "worker_cpus": 0.5}
    (tmp_path / "tp2.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "serve_app.cli", "serve", "--config", str(tmp_path / "tp2.yaml"),
               "--port", "{port}"]
    with serving(command, tmp_path / "serve.log") as (base_url, process):
        workers = tensor_parallel_workers(process.pid)
        assert any("Worker_TP0" in line for line in workers), workers
        assert any("Worker_TP1" in line for line in workers), workers
        client = OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
        answer = client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=8)
        assert answer.usage.completion_tokens == 8
