"""A local multi-node Ray cluster on loopback, kept apart from other Ray instances on the machine.

Nodes are `ray.cluster_utils.Cluster` nodes declaring logical GPUs; the simulated engine
needs none. Everything the cluster starts gets its own temp dir, so its address file is not
the machine's default one (a plain `ray.init()` elsewhere never joins it), and every node,
the driver included, uses 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serve_app.ray_env import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def loopback_ray() -> Iterator[Path]:
    from ray._private import ray_constants  # imported before the env changes: restored as found

    # Short path: Ray's Unix socket paths live under it (at most 107 bytes).
    temp = Path(tempfile.mkdtemp(prefix="rdt", dir="/tmp"))
    settings = {
        "RAY_TMPDIR": str(temp),
        # With "clusters disabled" Ray resolves localhost to 127.0.0.1 instead of the host's IP.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # Serve's fallback proxy binds a fixed port (8500/9500) with SO_REUSEPORT: every Serve
        # instance on the machine would share it, and HAProxy's fallback route would reach the
        # others' apps. Ours gets ports of its own.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        # Ray waits 30 s for its GCS to write the port it bound (120 s with a disk-backed GCS).
        # A fresh `make test` once hit the 30 s as a test module's cluster started right after
        # the previous module's had shut down, on 2 busy cores.
        "RAY_gcs_server_port_wait_time_s": "120",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    enabled, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        yield temp
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = enabled
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(temp, ignore_errors=True)


@dataclass
class LocalCluster:
    address: str
    temp: Path
    node_names: dict[str, str] = field(default_factory=dict)
    """Ray node id -> "head", "gpu0", "gpu1", ..."""

    def name(self, node_id: str) -> str:
        return self.node_names.get(node_id, node_id or "-")


@contextlib.contextmanager
def local_cluster(gpu_nodes: int = 2, gpus_per_node: int = 8, cpus_per_node: float = 2,
                  head_cpus: float = 2, dashboard_port: int | None = None) -> Iterator[LocalCluster]:
    """A CPU head (no GPUs, like the production head) and `gpu_nodes` GPU nodes; the driver
    is connected. Serve, the driver and every node are shut down on the way out."""
    import ray
    from ray.cluster_utils import Cluster

    with loopback_ray() as temp:
        head = {"num_cpus": head_cpus, "num_gpus": 0, "node_ip_address": "127.0.0.1",
                "include_dashboard": dashboard_port is not None}
        if dashboard_port is not None:
            head |= {"dashboard_port": dashboard_port, "dashboard_host": "127.0.0.1"}
        try:
            cluster = Cluster(initialize_head=True, head_node_args=head)
        except RuntimeError:
            print(gcs_log_tails(temp), flush=True)  # the GCS's own account, before the temp dir goes
            raise
        try:
            local = LocalCluster(cluster.address, temp, {cluster.head_node.node_id: "head"})
            for index in range(gpu_nodes):
                node = cluster.add_node(num_cpus=cpus_per_node, num_gpus=gpus_per_node,
                                        node_ip_address="127.0.0.1")
                local.node_names[node.node_id] = f"gpu{index}"
            ray.init(address=cluster.address, logging_level="WARNING")
            yield local
        finally:
            _shutdown(cluster)


def gcs_log_tails(temp: Path, lines: int = 20) -> str:
    """The last lines of every GCS log the cluster's sessions wrote."""
    tails = []
    for log in sorted(temp.glob("ray/session_*/logs/gcs_server.*")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name}\n" + "\n".join(tail))
    return "\n".join(tails) or f"no GCS log under {temp}"


def _shutdown(cluster: Any) -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        with contextlib.suppress(Exception):
            serve.shutdown()  # graceful: HAProxy and replicas stop before their nodes go
        ray.shutdown()
    cluster.shutdown()


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, period_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period_s)
    raise TimeoutError(f"not within {timeout_s:.0f}s: {what}")


def ready(base_url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(base_url + "/ready", timeout=5).status_code == 200
    return False
