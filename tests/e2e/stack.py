"""Start the real stack in-process: a local Ray instance, Serve's HTTP proxy, the app."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serve_app.auth import key_hash
from serve_app.config import AppConfig, load_config, parse_config
from serve_app.ray_env import free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-test-0123456789"


def local_config(**overrides: Any) -> AppConfig:
    """deploy/local.yaml with an API key and any top-level overrides."""
    data = load_config(ROOT / "deploy" / "local.yaml").model_dump()
    data["auth"] = {"keys": [{"sha256": key_hash(API_KEY), "tenant": "default"}], "keys_env": None}
    data["models"][0]["source"] = str(ROOT / "models" / "tiny-llama")
    data.update(overrides)
    return parse_config(data, "tests/e2e")


class LoopThread:
    """One long-lived event loop for the test's handle calls: in throughput-optimised
    Serve a handle routes on the loop it was first used on, which must keep running."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any, timeout_s: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Stack:
    base_url: str
    config: AppConfig
    calls: LoopThread = field(default_factory=LoopThread)

    def server_handle(self, model: str = "tiny-llama") -> Any:
        from ray import serve

        from serve_app.server import deployment_name

        return serve.get_deployment_handle(deployment_name(self.config.model(model)), app_name="llm")

    def running_in_engine(self, model: str = "tiny-llama") -> int:
        async def ask() -> int:
            return (await self.server_handle(model).stats.remote()).running

        return self.calls.run(ask())


def init_ray(num_cpus: int) -> None:
    """A local Ray instance, started again once if its raylet never registered. On two busy
    cores, just after the previous test module's instance shut down, that happened once in
    a fresh `make test` (Ray's own 30 s wait, no raylet log at all)."""
    import ray

    for attempt in range(2):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING",
                     _node_ip_address="127.0.0.1")
            return
        except Exception as error:
            if attempt or "timed out during startup" not in str(error):
                raise
            ray.shutdown()
            time.sleep(5.0)


@contextlib.contextmanager
def running_stack(config: AppConfig, num_cpus: int = 2) -> Iterator[Stack]:
    import ray
    from ray import serve

    from serve_app.app import APP_NAME, build_application

    port = free_port()
    init_ray(num_cpus)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_application(config), name=APP_NAME, route_prefix="/")
        stack = Stack(f"http://127.0.0.1:{port}", config)
        wait_until_ready(stack.base_url)
        yield stack
        stack.calls.stop()
    finally:
        serve.shutdown()
        ray.shutdown()


def wait_until_ready(base_url: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):  # not up, or not ours
            response = httpx.get(base_url + "/ready", timeout=5)
            if response.status_code == 200 and response.json().get("status") == "ready":
                return
        time.sleep(0.5)
    raise TimeoutError(f"{base_url} not ready after {timeout_s}s")
