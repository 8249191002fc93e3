"""Environment every Ray process of the cluster needs for our serving path.

Ray reads these at import time in each process, so they belong in the
environment Ray starts with (the CLI sets them before `ray.init`; the cluster
launcher and KubeRay manifests set them on every node).
"""

from __future__ import annotations

import random
import socket

from serve_app.config import AppConfig

# Per-instance settings: the config's value wins over whatever the caller inherited.
PER_INSTANCE = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT",
                "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
                "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT")
BLOCK = 64
FREE_PORTS = (20000, 30000)
"""Where `free_port` looks: above the ports Ray gives its workers (10002-19999), below the
kernel's ephemeral range (32768 up), where any later bind to port 0 could be handed the same
port, and clear of the ports Ray binds by number (6379, 8265, 44217, 44227, 52365)."""
RAY_FIXED_PORTS = (44217, 44227, 52365)  # autoscaler and dashboard metrics, dashboard agent


def free_port() -> int:
    """A port free now that neither the kernel nor Ray will hand to anyone else later."""
    for _ in range(1000):
        port = random.randrange(*FREE_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("", port))  # all interfaces: free on loopback alone is not enough
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {FREE_PORTS[0]} and {FREE_PORTS[1]}")


def random_port_block() -> tuple[int, int]:
    """A block of ports for router replicas, none of them one Ray binds by number."""
    while True:
        low = random.randrange(32768 // BLOCK, 60000 // BLOCK) * BLOCK
        if not any(low <= port < low + BLOCK for port in RAY_FIXED_PORTS):
            return low, low + BLOCK - 1


def apply_ray_environment(config: AppConfig, environ: dict[str, str]) -> None:
    """Put the settings into `environ` (os.environ before Ray starts)."""
    for name, value in ray_environment(config).items():
        if name in PER_INSTANCE:
            environ[name] = value
        else:
            environ.setdefault(name, value)


def ray_environment(config: AppConfig) -> dict[str, str]:
    env = {
        # User code on the replica's own event loop, handle routing without a second
        # loop thread, gRPC between deployments, frozen GC after start-up: measured
        # about a third less front-end CPU per streamed token on the local config.
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # Serve's controller reconciles every 0.1 s by default, each pass a burst of CPU on
        # whichever core the token path shares with it. Every 0.5 s still notices a dead
        # replica or an autoscaling decision within a fraction of the health-check period;
        # on 2 cores it took the 4x-overload refusals over 20 ms from 11-16 to 1-8 per ~720.
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    }
    if config.http.ingress == "haproxy":
        # HAProxy forwards HTTP straight to the router replicas' own HTTP servers,
        # skipping the Python proxy and its per-chunk Ray message.
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = f"{config.http.drain_period_s:g}"
        # After a reload, an old HAProxy process keeps serving the client connections it
        # holds (a finished stream's keep-alive connection, say) with its old list of
        # routers. When a rollout has closed them all, a request there fails at once (500)
        # unless it retries long enough for the health checks to mark them down and fall
        # back on Serve's proxy, which reaches the new routers.
        env["RAY_SERVE_HAPROXY_RETRIES"] = "8"
        env["RAY_SERVE_HAPROXY_NBTHREAD"] = str(config.http.haproxy_threads)
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(config.http.haproxy_metrics_port or free_port())
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(config.http.haproxy_stats_port or free_port())
        env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] = str(config.http.fallback_proxy_port or free_port())
        env["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"] = str(config.http.fallback_proxy_grpc_port or free_port())
        low, high = config.http.replica_ports or random_port_block()
        env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(low)
        env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(high)
    return env
