"""Stand-ins for Serve's deployment handles, to drive the router's ASGI app in-process.

They return what a real LLMServer replica and AdmissionController would; the
end-to-end suite runs the same router against the real ones.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from serve_app.admission import Decision, Outcome
from serve_app.admission_gate import AdmissionGate
from serve_app.auth import KeyRing, key_hash
from serve_app.config import AppConfig, parse_config
from serve_app.protocol import EngineRequest, EngineStats, ReplyHead
from serve_app.router import RouterState, build_router_app

API_KEY = "sk-unit-test"
CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


class FakeStream:
    def __init__(self, items: list[Any]) -> None:
        self._items = iter(items)

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None

    def cancel(self) -> None:
        pass


async def _value(value: Any) -> Any:
    return value


class FakeServer:
    """An LLMServer handle whose replica answers every request at once."""

    def __init__(self) -> None:
        self.requests: list[EngineRequest] = []
        self.generate = SimpleNamespace(remote=self._generate)
        self.stats = SimpleNamespace(remote=lambda: _value(EngineStats()))

    def options(self, **_: Any) -> FakeServer:
        return self

    def _generate(self, request: EngineRequest) -> FakeStream:
        self.requests.append(request)
        if request.body.get("stream"):
            return FakeStream([ReplyHead(200, True), CHUNK, b"data: [DONE]\n\n"])
        return FakeStream([ReplyHead(200, False), json.dumps({"object": "chat.completion"}).encode()])


class FakeController:
    def __init__(self, outcome: Outcome = Outcome.ADMITTED) -> None:
        self.outcome = outcome
        self.admit = SimpleNamespace(remote=self._admit)
        self.release_many = SimpleNamespace(remote=lambda ids: _value(len(ids)))

    def _admit(self, ticket: Any) -> Any:
        if self.outcome is Outcome.ADMITTED:
            return _value(Decision(Outcome.ADMITTED, lease_id="lease-1"))
        return _value(Decision(self.outcome, retry_after_s=3, message="full"))


def unit_config(**overrides: Any) -> AppConfig:
    data = {
        "models": [{"name": "m", "source": "/models/m", "limits": {"max_output_tokens": 512}}],
        "auth": {"keys": [{"sha256": key_hash(API_KEY)}], "keys_env": None},
        "router": {"max_body_bytes": 64 * 1024, "token_channel": False},
    }
    data.update(overrides)
    return parse_config(data)


def router_app(config: AppConfig | None = None, controller: FakeController | None = None,
               server: FakeServer | None = None) -> Any:
    config = config or unit_config()
    state = RouterState(config, KeyRing.from_config(config.auth), {"m": server or FakeServer()},
                        AdmissionGate(controller or FakeController(), config.admission))
    return build_router_app(state, behind_serve_proxy=False)
