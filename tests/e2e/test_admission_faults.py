"""Admission under faults: a killed controller leaks nothing and hangs nothing; a router that
dies holding leases loses them by their TTL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from serve_app.outcomes import Ticket
from tests.e2e.admission_stack import controller  # noqa: F401 (a fixture)
from tests.e2e.admission_stack import KEYS, MODEL, Controller, chat, simulated_config
from tests.e2e.fault_load import Ended, Report, request_once, waited_for
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


def steady_load(stack: Stack, rate: float, count: int) -> list[Ended]:
    """Open-loop load; how every request ended."""
    async def run() -> list[Ended]:
        url, body = stack.base_url + "/v1/chat/completions", chat(10, stream=True)
        headers = {"Authorization": f"Bearer {KEYS['free']}"}
        async with httpx.AsyncClient(headers=headers, timeout=None) as client:
            tasks = []
            for _ in range(count):
                tasks.append(asyncio.create_task(request_once(client, url, body, CLIENT_TIMEOUT_S)))
                await asyncio.sleep(1 / rate)
            return await asyncio.gather(*tasks)

    return asyncio.run(run())


def test_killing_the_controller_mid_load_leaks_nothing_and_hangs_nothing(stack: Stack, controller: Controller):
    ended: list[Ended] = []
    load = threading.Thread(target=lambda: ended.extend(steady_load(stack, rate=10, count=80)))
    load.start()
    time.sleep(2.0)
    kill_controller_replica()  # Serve starts a new one; routers decide alone meanwhile
    killed_at = time.monotonic()
    load.join(CLIENT_TIMEOUT_S + 20)
    assert not load.is_alive()

    refused_until = max((end.ended for end in ended if end.outcome == "error"), default=killed_at)
    report = Report("admission controller death (ray.kill mid-load, 1 router)", ended, refused_until - killed_at,
                    note="recovery: until the last request refused meanwhile")
    report.print()
    counts = report.counts
    assert set(counts) <= {"complete", "error"}, report.failures()  # no hang, no connection error
    assert counts["complete"] >= 40
    assert max(end.ended - end.started for end in ended) < 10  # nobody waited on the dead controller
    time.sleep(LEASE_TTL_S + 2)
    snapshot = controller("snapshot")
    assert snapshot["in_flight"] == 0 and snapshot["queued"] == 0
    # the new controller relearns the capacity from the replica's reports
    waited_for(lambda: bool(controller("snapshot")["models"].get(MODEL, {}).get("replicas")), 30, poll_s=0.5)
    assert controller("snapshot")["models"][MODEL]["replicas"] == 1
    response = httpx.post(stack.base_url + "/v1/chat/completions", json=chat(2),
                          headers={"Authorization": f"Bearer {KEYS['free']}"}, timeout=30)
    assert response.status_code == 200


def wait_until_idle(controller: Controller, timeout_s: float) -> None:
    waited_for(lambda: controller("snapshot")["in_flight"] == 0, timeout_s)


def test_leases_of_a_router_that_died_expire_after_their_ttl(controller: Controller):
    wait_until_idle(controller, 5)
    # Admitted by a "router" (this test) that then vanishes without releasing.
    decisions = [controller("admit", Ticket(MODEL, "free", f"orphan-{n}", 10, 10)) for n in range(3)]
    assert all(decision.admitted for decision in decisions)
    assert controller("snapshot")["in_flight"] == 3
    wait_until_idle(controller, LEASE_TTL_S + 3)
    assert controller("snapshot")["in_flight"] == 0
