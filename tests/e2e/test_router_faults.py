"""A router replica dies under load: the other one keeps serving, nothing hangs, and the
admission capacity the dead one held comes back by its leases' time-to-live.

Simulated engine, two router replicas behind HAProxy; the router process is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.admission_stack import controller  # noqa: F401 (a fixture)
from tests.e2e.admission_stack import KEYS, MODEL, Controller, simulated_config
from tests.e2e.fault_load import Ended, Report, chat_body, request_once, waited_for
from tests.e2e.serve_process import descendants_titled
from tests.e2e.stack import Stack, running_stack

LEASE_TTL_S = 15.0  # outlasts the load, so the dead router's leases are seen held, then expiring
TOKENS = 100
STREAM_S = TOKENS * 0.02  # 2 s: some streams are always in flight on the router that dies
RATE_PER_S = 10
SENT = 100
HANG_AFTER_S = 30.0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    config = simulated_config(routers=2, simulated={"max_batch": 64}, lease_ttl_s=LEASE_TTL_S)
    with running_stack(config) as running:
        yield running


def router_pids() -> list[int]:
    return descendants_titled(os.getpid(), "ServeReplica:llm:Router")


async def load_with_a_kill(stack: Stack, kill_after_s: float) -> tuple[list[Ended], float]:
    """Open-loop streams at RATE_PER_S; one router is killed `kill_after_s` in."""
    url = stack.base_url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {KEYS['free']}"}
    killed_at = 0.0
    async with httpx.AsyncClient(headers=headers, timeout=None) as client:
        requests = []
        for sent in range(SENT):
            if sent == int(kill_after_s * RATE_PER_S):
                os.kill(router_pids()[0], signal.SIGKILL)
                killed_at = time.monotonic()
            body = chat_body(MODEL, TOKENS, stream_options={"include_usage": True})
            requests.append(asyncio.create_task(request_once(client, url, body, HANG_AFTER_S)))
            await asyncio.sleep(1 / RATE_PER_S)
        return await asyncio.gather(*requests), killed_at


def test_killing_a_router_under_load_hangs_nothing_and_leaks_nothing(stack: Stack, controller: Controller):
    assert len(router_pids()) == 2
    ended, killed_at = asyncio.run(load_with_a_kill(stack, kill_after_s=3.0))
    replaced_s = (time.monotonic() - killed_at) + waited_for(lambda: len(router_pids()) == 2, 60)
    orphaned = controller("snapshot")["in_flight"]  # leases only the dead router could have released
    released = lambda: controller("snapshot")["in_flight"] == 0  # noqa: E731
    released_s = (time.monotonic() - killed_at) + waited_for(released, LEASE_TTL_S + 5)
    report = Report("router death (SIGKILL 1 of 2 routers)", ended, replaced_s,
                    note=f"{orphaned} orphaned leases released {released_s:.1f}s after the kill")
    report.print()
    counts = report.counts
    assert counts["hung"] == counts["unshaped"] == 0, report.failures()
    after = [end for end in ended if end.started > killed_at + 1.0]
    assert after and all(end.outcome == "complete" for end in after), report.failures()  # the other one serves
    lost = counts["error"] + counts["dropped"]
    assert lost <= STREAM_S * RATE_PER_S, report.failures()  # at most what was in flight on the dead router
    assert len(router_pids()) == 2  # Serve replaced the dead router
    assert orphaned >= 1 and controller("snapshot")["in_flight"] == 0  # held by the dead router, then expired
    assert released_s <= LEASE_TTL_S + 3
