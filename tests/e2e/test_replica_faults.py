"""A replica dies mid-stream: every request still ends in an answer or an explicit error.

Runs on the simulated engine (two replicas) so that killing one is cheap and the
timing is known; the relay code under test is the same for vLLM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass

import httpx
import pytest
import yaml

from tests.e2e.fault_load import Ended, Report, chat_body, request_once, waited_for
from tests.e2e.serve_process import descendants_titled, serving
from tests.e2e.stack import ROOT

STREAMS = 16
TOKENS = 150  # 150 decode steps of 20 ms: the streams are still running when the replica dies
HANG_AFTER_S = 45.0


@dataclass
class Served:
    base_url: str
    pid: int

    def replicas(self) -> list[int]:
        return descendants_titled(self.pid, "ServeReplica:llm:LLMServer")

    def kill_a_replica(self) -> int:
        """SIGKILL one LLMServer replica process, as a crashed node or OOM kill would."""
        replicas = self.replicas()
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


async def kill_one_replica_during_streams(served: Served) -> tuple[list[Ended], float]:
    url = served.base_url + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=None) as client:
        streams = [asyncio.create_task(request_once(client, url, chat_body("sim-llama", TOKENS), HANG_AFTER_S))
                   for _ in range(STREAMS)]
        await asyncio.sleep(1.0)
        served.kill_a_replica()
        killed_at = time.monotonic()
        return await asyncio.gather(*streams), killed_at


def test_streams_of_a_dead_replica_end_with_an_error_and_the_rest_complete(two_replicas):
    ended, killed_at = asyncio.run(kill_one_replica_during_streams(two_replicas))
    ended_within_s = max(end.ended for end in ended) - killed_at
    replaced_s = time.monotonic() - killed_at + wait_for_two_replicas(two_replicas)
    report = Report("replica death mid-stream (SIGKILL 1 of 2 LLMServer replicas)", ended, replaced_s,
                    note=f"every stream ended within {ended_within_s:.1f}s of the kill")
    report.print()
    assert set(report.counts) <= {"complete", "error"}, report.failures()  # none hung, none vanished
    assert report.counts["error"] >= 1 and report.counts["complete"] >= 1
    assert ended_within_s < 30


async def requests_right_after_a_kill(served: Served) -> list[Ended]:
    served.kill_a_replica()
    url, body = served.base_url + "/v1/chat/completions", chat_body("sim-llama", 5, stream=False)
    async with httpx.AsyncClient(timeout=None) as client:
        return await asyncio.gather(*(request_once(client, url, body, HANG_AFTER_S) for _ in range(20)))


def test_requests_without_output_yet_are_retried_on_another_replica(two_replicas):
    wait_for_two_replicas(two_replicas)
    report = Report("replica death before the first token (retried on the other replica)",
                    asyncio.run(requests_right_after_a_kill(two_replicas)))
    report.print()
    assert report.counts == {"complete": 20}, report.failures()


def wait_for_two_replicas(served: Served, timeout_s: float = 120.0) -> float:
    """Serve replaces the killed replica; wait until both are back, and say how long that took."""
    took_s = waited_for(lambda: len(served.replicas()) == 2, timeout_s)
    assert len(served.replicas()) == 2, "the killed replica was not replaced"
    time.sleep(3)  # let the new one finish starting
    return took_s
