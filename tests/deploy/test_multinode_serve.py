"""The Serve app on a local multi-node cluster (CPU head + two nodes of 8 logical GPUs): placement
of real LLMServer replicas, and autoscaling under load and back, with the admission budget
following the replica count.

The app is deployed the way `serve deploy` does it (a ServeDeploySchema rendered from the app
config, handed to the controller). The model runs the simulated engine on `device: gpu` with
TP=4; as the simulated engine reserves only its actor bundle today, the rendered Serve config's
LLMServer entry is given the bundles a vLLM replica of the same model reserves. Autoscaling
uses the config's delays, made short, and Serve metrics every half second.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from serve_app import render
from serve_app.config import AppConfig, parse_config
from serve_app.placement import replica_bundles
from serve_app.server import deployment_name
from tests.deploy.cluster import LocalCluster, free_port, local_cluster, ready, wait_for
from tests.e2e.admission_stack import Controller

pytestmark = pytest.mark.e2e

MIN_REPLICAS, MAX_REPLICAS = 1, 5  # the cluster holds 4 TP=4 replicas: the 5th must wait
KV_TOKENS = 1_000_000  # per replica


def app_config() -> AppConfig:
    return parse_config({
        "models": [{
            "name": "sim-70b", "source": "simulated", "engine": "simulated", "device": "gpu",
            "parallelism": {"tensor": 4, "placement": "strict_pack"},
            "simulated": {"decode_step_base_s": 0.25, "kv_tokens": KV_TOKENS},  # 40 tokens = 10 s
            "resources": {"num_cpus": 0.1, "worker_cpus": 0.2},
            "autoscaling": {"min_replicas": MIN_REPLICAS, "max_replicas": MAX_REPLICAS,
                            "target_ongoing_requests": 2, "max_ongoing_requests": 16,
                            "upscale_delay_s": 1, "downscale_delay_s": 2},
            "graceful_shutdown_timeout_s": 2, "health_check_period_s": 2,
        }],
        "router": {"replicas": 1, "num_cpus": 0.1},
        "admission": {"num_cpus": 0.05},
        "http": {"host": "127.0.0.1", "port": free_port()},
    }, "tests/deploy")


def deploy_document(config: AppConfig) -> dict[str, Any]:
    document = render.serve_config(config)
    # All local nodes share 127.0.0.1: one HTTP ingress, on the (CPU) head.
    document["proxy_location"] = "HeadOnly"
    (model,) = config.models
    (server,) = [d for d in document["applications"][0]["deployments"] if d["name"] == deployment_name(model)]
    server["placement_group_bundles"] = replica_bundles(model.model_copy(update={"engine": "vllm"}))
    server["autoscaling_config"] |= {"metrics_interval_s": 0.5, "look_back_period_s": 2}
    return document


@dataclass
class App:
    cluster: LocalCluster
    config: AppConfig
    base_url: str
    server: str
    controller: Controller

    def admission_budget(self) -> tuple[int, float]:
        """(replicas, KV tokens) the AdmissionController currently counts for the model."""
        model = self.controller("snapshot")["models"].get("sim-70b", {})
        return model.get("replicas", 0), model.get("budget_tokens", 0.0)

    def replica_states(self) -> dict[str, int]:
        from ray import serve

        status = serve.status().applications["llm"].deployments[self.server]
        return {str(getattr(state, "value", state)): count for state, count in status.replica_states.items()}

    def replica_groups(self) -> list[tuple[str, list[str]]]:
        """(state, node of each bundle) of every live LLMServer replica placement group."""
        from ray.util.placement_group import placement_group_table

        return [(group["state"], [self.cluster.name(node) for _, node in sorted(group["bundles_to_node_id"].items())])
                for group in placement_group_table().values()
                if group["name"].startswith(f"SERVE_REPLICA::llm#{self.server}#") and group["state"] != "REMOVED"]


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    config = app_config()
    with local_cluster(gpu_nodes=2, gpus_per_node=8, cpus_per_node=2, head_cpus=2) as cluster:
        schema = ServeDeploySchema.model_validate(deploy_document(config))
        client = serve_start(http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location)
        client.deploy_apps(schema)  # what the dashboard does with `serve deploy`'s request
        base_url = f"http://127.0.0.1:{config.http.port}"
        wait_for(lambda: ready(base_url), 90, "the app answers /ready")
        controller = Controller()
        yield App(cluster, config, base_url, deployment_name(config.models[0]), controller)
        controller.close()


@dataclass
class Load:
    """Concurrent non-streamed chat requests, each ~10 s in the simulated engine, until stopped."""

    base_url: str
    concurrency: int = 12
    statuses: collections.Counter = field(default_factory=collections.Counter)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped_at = time.monotonic()
        self._stop.set()  # users finish their request in flight, then leave
        self._thread.join(60)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=120) as client:
            await asyncio.gather(*(self._user(client) for _ in range(self.concurrency)))

    async def _user(self, client: httpx.AsyncClient) -> None:
        body = {"model": "sim-70b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}
        while not self._stop.is_set():
            try:
                self.statuses[(await client.post("/v1/chat/completions", json=body)).status_code] += 1
            except httpx.HTTPError as error:
                self.statuses[type(error).__name__] += 1
                await asyncio.sleep(0.5)


def test_at_min_replicas_one_replica_holds_four_gpus_on_one_node(app):
    assert app.replica_states() == {"RUNNING": MIN_REPLICAS}
    ((state, nodes),) = app.replica_groups()
    assert state == "CREATED"
    assert len(nodes) == 5 and len(set(nodes)) == 1 and nodes[0] in ("gpu0", "gpu1")
    reply = httpx.post(app.base_url + "/v1/chat/completions", timeout=60, json={
        "model": "sim-70b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert reply.status_code == 200, reply.text
    assert app.admission_budget() == (MIN_REPLICAS, MIN_REPLICAS * KV_TOKENS)


def test_scales_up_under_load_across_nodes_and_back_down_when_it_stops(app):
    from ray.autoscaler.v2.sdk import get_cluster_status

    started = time.monotonic()
    with Load(app.base_url) as load:
        def scaled_up() -> bool:
            groups = app.replica_groups()
            return (app.replica_states().get("RUNNING") == 4 and len(groups) == MAX_REPLICAS
                    and [state for state, _ in groups].count("PENDING") == 1)

        wait_for(scaled_up, 60, f"4 running + 1 waiting replica (load so far: {load.statuses})")
        up_s = time.monotonic() - started
        groups = app.replica_groups()
        per_node = collections.Counter()
        for state, nodes in groups:
            if state == "CREATED":
                (node,) = set(nodes)  # every replica's five bundles on a single node
                per_node[node] += 1
        assert per_node == {"gpu0": 2, "gpu1": 2}  # two TP=4 replicas fill each 8-GPU node

        # The replica that fits nowhere is visible to the Ray autoscaler as a 4-GPU gang.
        demand = wait_for(lambda: get_cluster_status(app.cluster.address)
                          .resource_demands.placement_group_demand, 15, "pending demand")
        (pending,) = demand
        assert pending.strategy == "STRICT_PACK"
        assert sum(r.count for r in pending.bundles_by_count if r.bundle.get("GPU") == 1.0) == 4

        # Admission counts the running replicas' KV capacity, not the pending one's.
        wait_for(lambda: app.admission_budget() == (4, 4 * KV_TOKENS), 10,
                 f"admission budget of 4 replicas (now {app.admission_budget()})")
    assert load.statuses[200] > 0 and set(load.statuses) == {200}, load.statuses

    wait_for(lambda: app.replica_states() == {"RUNNING": MIN_REPLICAS} and len(app.replica_groups()) == 1,
             60, "back to min_replicas")
    down_s = time.monotonic() - load.stopped_at
    wait_for(lambda: app.admission_budget() == (MIN_REPLICAS, MIN_REPLICAS * KV_TOKENS), 10,
             f"admission budget back to one replica (now {app.admission_budget()})")
    print(f"\nscaled 1 -> 4 running + 1 pending in {up_s:.1f}s under load; "
          f"back to 1 in {down_s:.1f}s after it stopped; {dict(load.statuses)}")
