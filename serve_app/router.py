"""The Router: the ingress deployment (Starlette; imports no vLLM, no torch).

Per request: auth -> body size -> JSON -> schema -> model -> output cap ->
admission -> relay from the model's LLMServer -> release. Every failure is an
OpenAI-shaped error with the status an OpenAI client expects. Every answer says in
`Server-Timing` how long admission took and how long the router took to its head
(for a stream: to its first chunk), so a slow answer shows where its time went.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from serve_app.admission_gate import AdmissionGate
from serve_app.auth import KeyRing
from serve_app.channel.inbox import InboxServer
from serve_app.config import AppConfig, ModelConfig
from serve_app.errors import error_body
from serve_app.openapi import openapi_document
from serve_app.outcomes import PRIORITY_HEADER, Decision, Ticket, Usage, response_headers, retry_after_header
from serve_app.protocol import EngineRequest
from serve_app.relay import OpenedReply, ReplicaUnavailable, open_reply
from serve_app.request_id import RequestIdMiddleware
from serve_app.requests import REQUEST_TYPES
from serve_app.usage import usage_in

logger = logging.getLogger("ray.serve")

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
OPENAPI = openapi_document()
NOTHING_USED = Usage(0, 0)  # an engine that refused a request generated nothing


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = error_body(self.message, self.status, param=self.param, code=self.code)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass
class RouterState:
    config: AppConfig
    keyring: KeyRing
    servers: dict[str, Any]
    gate: AdmissionGate
    inboxes: InboxServer | None = None
    started_at: int = field(default_factory=lambda: int(time.time()))


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def validate(endpoint: str, body: dict[str, Any]) -> Any:
    try:
        return REQUEST_TYPES[endpoint].model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        param = str(first["loc"][0]) if first["loc"] else None
        raise ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], param=param) from None


def resolve_max_tokens(endpoint: str, parsed: Any, model: ModelConfig) -> int:
    requested = parsed.requested_output_tokens()
    cap = model.limits.max_output_tokens
    if requested is not None and requested > cap:
        param = "max_completion_tokens" if getattr(parsed, "max_completion_tokens", None) else "max_tokens"
        raise ApiError(400, f"{param} is {requested}, but this model returns at most {cap} tokens",
                       param=param, code="max_tokens_exceeded")
    if requested is not None:
        return requested
    if endpoint == "completion":
        return min(COMPLETIONS_DEFAULT_MAX_TOKENS, cap)
    return model.limits.output_tokens_when_unset


def refusal(decision: Decision) -> ApiError:
    return ApiError(decision.status, decision.message or "request refused", code=decision.outcome.value,
                    headers=response_headers(decision))


def replica_unavailable(error: ReplicaUnavailable) -> ApiError:
    return ApiError(503, str(error), code="replica_unavailable", headers={"Retry-After": retry_after_header(1)})


def server_timing(state: Any, received_at: float) -> str:
    """The Server-Timing header (W3C), in milliseconds: `admission` when the request
    reached it, and `router` from the request's arrival to its response's head."""
    router = f"router;dur={(time.perf_counter() - received_at) * 1000:.2f}"
    admission_s = getattr(state, "admission_s", None)
    return router if admission_s is None else f"admission;dur={admission_s * 1000:.2f}, {router}"


def priority_class(request: Request, config: AppConfig) -> str | None:
    requested = request.headers.get(PRIORITY_HEADER)
    if requested is not None and requested not in config.admission.classes:
        raise ApiError(400, f"{PRIORITY_HEADER} names no class; known: {sorted(config.admission.classes)}",
                       param=PRIORITY_HEADER, code="invalid_priority_class")
    return requested


class OpenAIEndpoint:
    """POST /v1/chat/completions and /v1/completions."""

    def __init__(self, state: RouterState, endpoint: str) -> None:
        self._state, self._endpoint = state, endpoint

    async def handle(self, request: Request) -> Response:
        received_at = time.perf_counter()
        try:
            response = await self._serve(request)
        except ApiError as error:
            response = error.response()
        except ClientDisconnect:
            return Response(status_code=499)
        response.headers["Server-Timing"] = server_timing(request.state, received_at)
        return response

    async def _serve(self, request: Request) -> Response:
        state = self._state
        tenant = state.keyring.tenant_for(request.headers.get("authorization"))
        if tenant is None:
            raise ApiError(401, "invalid or missing API key; send 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        body = parse_json(await read_body(request, state.config.router.max_body_bytes))
        parsed = validate(self._endpoint, body)
        model = state.config.model(parsed.model)
        if model is None:
            raise ApiError(404, f"the model '{parsed.model}' does not exist", param="model",
                           code="model_not_found")
        body["max_tokens"] = resolve_max_tokens(self._endpoint, parsed, model)
        body.pop("max_completion_tokens", None)
        prompt_tokens = math.ceil(parsed.prompt_chars() / 4)
        ticket = Ticket(model.name, tenant, request.state.request_id, prompt_tokens, body["max_tokens"],
                        priority_class(request, state.config), parsed.sequences())
        asked_at = time.perf_counter()
        decision = await state.gate.admit(ticket)
        request.state.admission_s = time.perf_counter() - asked_at
        if not decision.admitted:
            raise refusal(decision)
        reply_to = state.inboxes.address if state.inboxes and parsed.stream else None
        engine_request = EngineRequest(self._endpoint, body, uuid.uuid4().hex, prompt_tokens, reply_to,
                                       decision.engine_priority)
        return await self._relay(model, engine_request, decision)

    async def _relay(self, model: ModelConfig, engine_request: EngineRequest, decision: Decision) -> Response:
        gate, lease_id = self._state.gate, decision.lease_id
        admitted_at, first_byte_s = time.monotonic(), None
        release = lambda usage=None: gate.release(lease_id, usage, first_byte_s)  # noqa: E731
        try:
            opened = await open_reply(self._state.servers[model.name], engine_request, self._state.inboxes)
            first_byte_s = time.monotonic() - admitted_at
        except ReplicaUnavailable as error:
            release()
            raise replica_unavailable(error) from None
        except BaseException:
            release()
            raise
        headers = response_headers(decision)
        if opened.head.stream:
            return StreamingResponse(_stream(opened, release),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", **opened.head.headers, **headers})
        payload = b""
        try:
            payload = opened.first + b"".join([chunk async for chunk in opened.rest])
        except ReplicaUnavailable as error:
            raise replica_unavailable(error) from None
        finally:
            release(usage_in(payload) if opened.head.status == 200 else NOTHING_USED)
        return Response(payload, status_code=opened.head.status, media_type="application/json",
                        headers={**opened.head.headers, **headers})


async def _stream(opened: OpenedReply, release: Callable[[Usage | None], None]) -> AsyncIterator[bytes]:
    try:
        yield opened.first
        async for chunk in opened.rest:
            yield chunk
    finally:
        await opened.rest.aclose()
        release(opened.usage)  # as the replica counted it; None if the stream was cut short


def models_endpoint(state: RouterState) -> Callable[[Request], Awaitable[Response]]:
    async def list_models(request: Request) -> Response:
        if state.keyring.tenant_for(request.headers.get("authorization")) is None:
            return ApiError(401, "invalid or missing API key", code="invalid_api_key").response()
        data = [{"id": model.name, "object": "model", "created": state.started_at, "owned_by": "serve_app",
                 "max_output_tokens": model.limits.max_output_tokens} for model in state.config.models]
        return JSONResponse({"object": "list", "data": data})

    return list_models


def ready_endpoint(state: RouterState) -> Callable[[Request], Awaitable[Response]]:
    async def ready(request: Request) -> Response:
        waiting = await asyncio.gather(*(_has_replica(handle) for handle in state.servers.values()))
        missing = [name for name, ok in zip(state.servers, waiting) if not ok]
        if missing:
            return JSONResponse(error_body(f"models without a running replica: {missing}", 503), status_code=503)
        return JSONResponse({"status": "ready", "models": list(state.servers)})

    return ready


async def _has_replica(handle: Any) -> bool:
    try:
        await asyncio.wait_for(handle.stats.remote(), timeout=2.0)
        return True
    except Exception:
        return False


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "") or "request failed"
    return JSONResponse(error_body(str(detail), status), status_code=status, headers=getattr(exc, "headers", None))


async def internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error in request %s", getattr(request.state, "request_id", "?"))
    return JSONResponse(error_body("internal error; the request was not completed", 500), status_code=500)


def build_router_app(state: RouterState, *, behind_serve_proxy: bool = True) -> Any:
    routes = [
        Route("/v1/chat/completions", OpenAIEndpoint(state, "chat").handle, methods=["POST"]),
        Route("/v1/completions", OpenAIEndpoint(state, "completion").handle, methods=["POST"]),
        Route("/v1/models", models_endpoint(state), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready_endpoint(state), methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: internal_error})
    if state.config.router.cors_allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=state.config.router.cors_allow_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    return RequestIdMiddleware(app, behind_serve_proxy=behind_serve_proxy)


class Router:
    """The ingress deployment; its ASGI app is built per replica from its state."""

    async def __init__(self, config: AppConfig, servers: dict[str, Any], admission: Any) -> None:
        self._state = RouterState(config, KeyRing.from_config(config.auth), servers,
                                  AdmissionGate(admission, config.admission))
        if config.router.token_channel:
            import ray.util

            self._state.inboxes = InboxServer()
            await self._state.inboxes.start(ray.util.get_node_ip_address())

    def __serve_build_asgi_app__(self) -> Any:
        return build_router_app(self._state)
