"""A replica dies mid-stream: every request still ends in an answer or an explicit error.

Runs on the simulated engine (two replicas) so that killing one is cheap and the
timing is known; the relay code under test is the same for vLLM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import httpx
import pytest
import yaml

from tests.e2e.serve_process import cmdline, descendants, serving
from tests.e2e.stack import ROOT

STREAMS = 16
TOKENS = 150  # 150 decode steps of 20 ms: the streams are still running when the replica dies


@dataclass
class Served:
    base_url: str
    pid: int

    def kill_a_replica(self) -> int:
        """SIGKILL one LLMServer replica process, as a crashed node or OOM kill would."""
        replicas = [pid for pid in descendants(self.pid) if "ServeReplica:llm:LLMServer" in cmdline(pid)]
        assert len(replicas) == 2, replicas
        os.kill(replicas[0], signal.SIGKILL)
        return replicas[0]


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    config = yaml.safe_load((ROOT / "deploy" / "simulated.yaml").read_text())
    config["models"][0]["autoscaling"] = {"min_replicas": 2, "max_replicas": 2, "max_ongoing_requests": 512}
    path = tmp_path_factory.mktemp("faults") / "two-replicas.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "serve_app.cli", "serve", "--config", str(path), "--port", "{port}"]
    with serving(command, path.parent / "serve.log") as (base_url, process):
        yield Served(base_url, process.pid)


async def stream_once(client: httpx.AsyncClient, url: str) -> str:
    """'complete', 'error' (an SSE error event then [DONE]) or a description of what went wrong."""
    body = {"model": "sim-llama", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": TOKENS, "stream": True}
    events = []
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            return f"status {response.status_code}"
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
    if not events or events[-1] != "[DONE]":
        return "no [DONE]"
    if any('"error"' in event for event in events[:-1]):
        error = json.loads(events[-2])["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return "error"
    return "complete"


async def kill_one_replica_during_streams(served: Served) -> tuple[list[str], float]:
    url = served.base_url + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=60) as client:
        streams = [asyncio.create_task(stream_once(client, url)) for _ in range(STREAMS)]
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        served.kill_a_replica()
        outcomes = await asyncio.wait_for(asyncio.gather(*streams), timeout=45)
        return outcomes, time.monotonic() - killed_at


def test_streams_of_a_dead_replica_end_with_an_error_and_the_rest_complete(two_replicas):
    outcomes, took_s = asyncio.run(kill_one_replica_during_streams(two_replicas))
    assert set(outcomes) <= {"complete", "error"}, outcomes  # none hung, none vanished
    assert outcomes.count("error") >= 1 and outcomes.count("complete") >= 1
    assert took_s < 30


async def requests_right_after_a_kill(served: Served) -> list[int]:
    served.kill_a_replica()
    body = {"model": "sim-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(*(client.post(served.base_url + "/v1/chat/completions", json=body)
                                           for _ in range(20)))
    return [response.status_code for response in responses]


def test_requests_without_output_yet_are_retried_on_another_replica(two_replicas):
    wait_for_two_replicas(two_replicas)
    statuses = asyncio.run(requests_right_after_a_kill(two_replicas))
    assert statuses == [200] * 20


def wait_for_two_replicas(served: Served, timeout_s: float = 120.0) -> None:
    """Serve replaces the killed replica; wait until both are back."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        replicas = [pid for pid in descendants(served.pid) if "ServeReplica:llm:LLMServer" in cmdline(pid)]
        if len(replicas) == 2:
            time.sleep(3)  # let the new one finish starting
            return
        time.sleep(1)
    raise AssertionError("the killed replica was not replaced")
