"""A simulated-engine stack for admission's end-to-end tests: starts in seconds, known capacity."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from serve_app.auth import key_hash
from serve_app.capacity_reporter import CONTROLLER_DEPLOYMENT
from serve_app.config import AppConfig, parse_config

MODEL = "sim"
KEYS = {"metered": "sk-metered-0001", "narrow": "sk-narrow-0001", "free": "sk-free-0001"}
FAIR_SHARE_WINDOW_S = 1.0
"""Short, so one test's tenants no longer hold room of the budget in the next."""
SIMULATED = {"max_batch": 4, "kv_tokens": 65536, "decode_step_base_s": 0.02,
             "decode_step_per_seq_s": 0.0, "max_model_len": 4096}


def simulated_config(routers: int = 2, *, replicas: int = 1, simulated: dict[str, Any] | None = None,
                     **admission: Any) -> AppConfig:
    return parse_config({
        "models": [{"name": MODEL, "source": "simulated", "engine": "simulated",
                    "simulated": {**SIMULATED, **(simulated or {})}, "resources": {"num_cpus": 0.2},
                    "autoscaling": {"min_replicas": replicas, "max_replicas": replicas,
                                    "max_ongoing_requests": 1000}}],
        "router": {"replicas": routers, "num_cpus": 0.2},
        "auth": {"keys": [{"sha256": key_hash(key), "tenant": tenant} for tenant, key in KEYS.items()],
                 "keys_env": None},
        "admission": {"num_cpus": 0.05, "classes": {"default": {"ttft_slo_s": 1.0}},
                      "fair_share_window_s": FAIR_SHARE_WINDOW_S,
                      "tenants": [{"name": "metered", "limits": {"requests_per_minute": 20}},
                                  {"name": "narrow", "limits": {"max_concurrent": 3}},
                                  {"name": "free"}],
                      **admission},
    }, "tests/e2e/admission")


def chat(max_tokens: int, stream: bool = False) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


class Controller:
    """Calls the AdmissionController from the test process. Handles bind to the event loop
    they are first used on, so every call runs on one loop kept in a thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._handle: Any = None

    def __call__(self, method: str, *args: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(self._call(method, *args), self._loop).result(timeout_s)

    async def _call(self, method: str, *args: Any) -> Any:
        from ray import serve

        if self._handle is None:
            self._handle = serve.get_deployment_handle(CONTROLLER_DEPLOYMENT, app_name="llm")
        return await getattr(self._handle, method).remote(*args)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def controller(stack: Any) -> Iterator[Controller]:
    """The test module's running stack's AdmissionController, callable from the test."""
    caller = Controller()
    yield caller
    caller.close()
