"""Redeploying a changed config and scaling down drain the streams in flight: every stream
started before the change completes, and so does every request sent during it.

Simulated engine, two routers and two LLMServer replicas; a stream lasts 30 s, so each
spans the whole replacement of the replica and of the router that serve it. A short request
may be sent again once, on a new connection, if its keep-alive connection closed before any
response (an old HAProxy process closes it when the stream it carried ends), as an OpenAI
client does by default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from serve_app.config import AppConfig
from tests.e2e.admission_stack import KEYS, MODEL, simulated_config
from tests.e2e.fault_load import Ended, Report, chat_body, request_once, waited_for
from tests.e2e.stack import Stack, running_stack

STREAMS = 12
TOKENS = 1500  # decode steps of 20 ms: 30 s, longer than Serve's default graceful shutdown (20 s)
HANG_AFTER_S = 60.0
MAX_RECONNECTS = 2  # in a whole rollout, of ~220 short requests
SERVER = "LLMServer_sim"
CHANGED_STEP_S = 0.021


def rollout_config(replicas: int, decode_step_s: float = 0.02) -> AppConfig:
    return simulated_config(routers=2, replicas=replicas,
                            simulated={"max_batch": 64, "decode_step_base_s": decode_step_s})


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(rollout_config(replicas=2)) as running:
        yield running


def redeploy(config: AppConfig) -> None:
    from ray import serve

    from serve_app.app import APP_NAME, build_application

    serve.run(build_application(config), name=APP_NAME, route_prefix="/")


def replicas_of(deployment: str) -> set[str]:
    import ray

    return {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if f"#{deployment}#" in actor["name"]}


async def traffic_across(stack: Stack, change: Callable[[], None]) -> list[Ended]:
    """Long streams, then `change` while they run, with short requests sent all along."""
    url = stack.base_url + "/v1/chat/completions"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEYS['free']}"}, timeout=None) as client:
        streams = [asyncio.create_task(request_once(client, url, chat_body(MODEL, TOKENS), HANG_AFTER_S))
                   for _ in range(STREAMS)]
        await asyncio.sleep(1.5)  # every stream is producing tokens
        changing = asyncio.ensure_future(asyncio.to_thread(change))
        short: list[Ended] = []
        while not (changing.done() and all(stream.done() for stream in streams)):
            short.append(await request_once(client, url, chat_body(MODEL, 5, stream=False), HANG_AFTER_S,
                                            reconnects=1))
        await changing
        return [stream.result() for stream in streams] + short


def rollout(stack: Stack, fault: str, new_config: AppConfig,
            settled: Callable[[set[str]], bool]) -> Report:
    """Redeploy `new_config` under traffic; done when the replicas have `settled`."""
    started = time.monotonic()

    def change() -> None:
        redeploy(new_config)
        waited_for(lambda: settled(replicas_of(SERVER)), HANG_AFTER_S)

    report = Report(fault, asyncio.run(traffic_across(stack, change)), time.monotonic() - started)
    report.print()
    return report


def test_redeploying_a_changed_config_replaces_replicas_without_failing_a_stream(stack: Stack):
    old = replicas_of(SERVER)
    assert len(old) == 2
    changed = rollout_config(replicas=2, decode_step_s=CHANGED_STEP_S)  # new init args: new replicas
    report = rollout(stack, "rolling update (changed config, 2 replicas)", changed,
                     settled=lambda now: len(now) == 2 and not now & old)
    assert not replicas_of(SERVER) & old  # every replica was replaced...
    assert report.counts == {"complete": len(report.ended)}, report.failures()  # ...and nothing failed
    assert report.reconnects <= MAX_RECONNECTS
    assert report.recovery_s < changed.models[0].graceful_shutdown_timeout_s


def test_scaling_down_drains_the_streams_of_the_removed_replica(stack: Stack):
    waited_for(lambda: len(replicas_of(SERVER)) == 2, HANG_AFTER_S)
    smaller = rollout_config(replicas=1, decode_step_s=CHANGED_STEP_S)  # only the replica count changes
    report = rollout(stack, "downscale (2 -> 1 replicas)", smaller, settled=lambda now: len(now) == 1)
    assert len(replicas_of(SERVER)) == 1
    assert report.counts == {"complete": len(report.ended)}, report.failures()
    assert report.reconnects <= MAX_RECONNECTS
    assert report.recovery_s < smaller.models[0].graceful_shutdown_timeout_s
