"""Admission under faults: a killed controller leaks nothing and hangs nothing; a router that
dies holding leases loses them by their TTL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from serve_app.outcomes import Ticket
from tests.e2e.admission_stack import controller  # noqa: F401 (a fixture)
from tests.e2e.admission_stack import KEYS, MODEL, Controller, chat, simulated_config
from tests.e2e.stack import Stack, running_stack

LEASE_TTL_S = 4.0
CLIENT_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    config = simulated_config(routers=1, lease_ttl_s=LEASE_TTL_S, unreachable_retry_s=1.0,
                              fallback_max_in_flight=4)
    with running_stack(config) as running:
        yield running


def kill_controller_replica() -> None:
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if "AdmissionController" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            return
    raise AssertionError("no AdmissionController replica found")


def steady_load(stack: Stack, rate: float, count: int) -> list[tuple[int | str, float]]:
    """Open-loop load; every request's status (or how it failed) and its time."""
    async def one(client: httpx.AsyncClient) -> tuple[int | str, float]:
        started = time.monotonic()
        try:
            response = await client.post("/v1/chat/completions", json=chat(10, stream=True))
            return response.status_code, time.monotonic() - started
        except httpx.HTTPError as error:
            return type(error).__name__, time.monotonic() - started

    async def run() -> list[tuple[int | str, float]]:
        headers = {"Authorization": f"Bearer {KEYS['free']}"}
        async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=CLIENT_TIMEOUT_S) as client:
            tasks = []
            for _ in range(count):
                tasks.append(asyncio.create_task(one(client)))
                await asyncio.sleep(1 / rate)
            return await asyncio.gather(*tasks)

    return asyncio.run(run())


def test_killing_the_controller_mid_load_leaks_nothing_and_hangs_nothing(stack: Stack, controller: Controller):
    results: list = []
    load = threading.Thread(target=lambda: results.extend(steady_load(stack, rate=10, count=80)))
    load.start()
    time.sleep(2.0)
    kill_controller_replica()  # Serve starts a new one; routers decide alone meanwhile
    load.join(CLIENT_TIMEOUT_S + 20)
    assert not load.is_alive()

    counts = Counter(status for status, _ in results)
    print("statuses under the kill:", dict(counts))
    assert set(counts) <= {200, 503}, counts  # no timeout, no connection error
    assert counts[200] >= 40
    assert max(seconds for _, seconds in results) < 10  # nobody waited on the dead controller
    time.sleep(LEASE_TTL_S + 2)
    snapshot = controller("snapshot")
    assert snapshot["in_flight"] == 0 and snapshot["queued"] == 0
    deadline = time.monotonic() + 30  # the new controller relearns the capacity from the replica's reports
    while not controller("snapshot")["models"].get(MODEL, {}).get("replicas") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert controller("snapshot")["models"][MODEL]["replicas"] == 1
    response = httpx.post(stack.base_url + "/v1/chat/completions", json=chat(2),
                          headers={"Authorization": f"Bearer {KEYS['free']}"}, timeout=30)
    assert response.status_code == 200


def wait_until_idle(controller: Controller, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while controller("snapshot")["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.2)


def test_leases_of_a_router_that_died_expire_after_their_ttl(controller: Controller):
    wait_until_idle(controller, 5)
    # Admitted by a "router" (this test) that then vanishes without releasing.
    decisions = [controller("admit", Ticket(MODEL, "free", f"orphan-{n}", 10, 10)) for n in range(3)]
    assert all(decision.admitted for decision in decisions)
    assert controller("snapshot")["in_flight"] == 3
    wait_until_idle(controller, LEASE_TTL_S + 3)
    assert controller("snapshot")["in_flight"] == 0
