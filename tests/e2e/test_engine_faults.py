"""vLLM's engine core dies inside a live replica: the health check fails, Serve replaces
the replica, requests meanwhile end with explicit errors and succeed again afterwards.

Real vLLM on the tiny model, one replica (two vLLM engines do not fit two cores): the
outage is whole, so every request in it must be refused or wait, never hang.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.fault_load import Ended, Report, chat_body, request_once, waited_for
from tests.e2e.serve_process import engine_core_pid
from tests.e2e.stack import API_KEY, Stack, local_config, running_stack

HEALTH_CHECK_PERIOD_S = 1.0
HANG_AFTER_S = 90.0  # longer than admission's longest wait (24 s) plus a vLLM start
RECOVERY_BUDGET_S = 240.0  # detection (3 failed checks) + a vLLM start (~50 s, more on a busy machine)


@pytest.fixture(scope="module")
def stack(tiny_model) -> Iterator[Stack]:
    config = local_config()
    model = config.models[0].model_copy(update={"health_check_period_s": HEALTH_CHECK_PERIOD_S,
                                                "health_check_timeout_s": 10.0})
    with running_stack(config.model_copy(update={"models": [model]})) as running:
        yield running


def deployment_status(stack: Stack) -> str:
    from ray import serve

    from serve_app.server import deployment_name

    app = serve.status().applications["llm"]
    return str(app.deployments[deployment_name(stack.config.models[0])].status.value)


class Traffic:
    """Two clients sending short chats back to back until stopped, from their own thread."""

    def __init__(self, stack: Stack) -> None:
        self.ended: list[Ended] = []
        self._url, self._stop = stack.base_url + "/v1/chat/completions", threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HANG_AFTER_S + 10)
        assert not self._thread.is_alive()

    def successes_after(self, moment: float) -> list[Ended]:
        return [end for end in list(self.ended) if end.started > moment and end.outcome == "complete"]

    async def _run(self) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(headers=headers, timeout=None) as client:
            await asyncio.gather(self._client(client, stream=True), self._client(client, stream=False))

    async def _client(self, client: httpx.AsyncClient, stream: bool) -> None:
        while not self._stop.is_set():
            end = await request_once(client, self._url, chat_body("tiny-llama", 8, stream), HANG_AFTER_S)
            self.ended.append(end)
            if end.outcome != "complete":
                await asyncio.sleep(0.5)  # as a client honouring Retry-After would


def test_a_dead_engine_fails_the_health_check_and_the_replica_is_replaced(stack: Stack):
    statuses: set[str] = set()
    with Traffic(stack) as traffic:
        waited_for(lambda: bool(traffic.successes_after(0)), HANG_AFTER_S)
        os.kill(engine_core_pid(), signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + RECOVERY_BUDGET_S
        while len(traffic.successes_after(killed_at)) < 4 and time.monotonic() < deadline:
            statuses.add(deployment_status(stack))
            time.sleep(0.5)
        recovered = traffic.successes_after(killed_at)
    report = Report("engine death (vLLM EngineCore SIGKILL, 1 replica)", traffic.ended,
                    recovered[0].ended - killed_at if recovered else None)
    report.print()
    print("\n".join(report.failures()))
    assert "UNHEALTHY" in statuses  # the failed health check, as Serve reports it
    assert len(recovered) >= 4, report.line()
    counts = report.counts
    assert counts["hung"] == counts["dropped"] == counts["unshaped"] == 0, report.failures()
    assert counts["error"] >= 1  # the outage was seen, and seen as explicit errors
    assert all("status 503" in failure and "'retry-after'" in failure or "SSE" in failure
               for failure in report.failures()), report.failures()
    assert engine_core_pid()  # a new engine runs in the new replica
