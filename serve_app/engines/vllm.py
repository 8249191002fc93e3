"""The production engine: vLLM's AsyncLLM with vLLM's own OpenAI serving layer.

Chat templates, sampling parameters, stop strings, logprobs, response formats and
error messages all come from vLLM's serving classes, so a request behaves exactly
as under `vllm serve`. This module and `vllm_cpu` (how a CPU replica lays out
vLLM's processes) are the ones coupled to vLLM internals, written against vllm 0.32.0.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from serve_app.config import ModelConfig
from serve_app.engines import lean_chat_stream
from serve_app.engines.base import EngineDead, Reply
from serve_app.engines.vllm_args import resolve_executor, serve_argv
from serve_app.engines.vllm_cpu import cpu_engine_processes, run_single_worker_in_engine_core
from serve_app.errors import context_code, error_body
from serve_app.outcomes import Usage
from serve_app.protocol import EngineRequest, EngineStats, ReplyHead
from serve_app.usage import FINAL_USAGE_MARK, client_wants_usage, engine_stream_options, usage_in

logger = logging.getLogger(__name__)

ENGINE_DEAD_MESSAGE = "the model replica's engine failed and the replica is being replaced; retry shortly"


def parse_serve_args(model: ModelConfig) -> Any:
    """Parse the model's arguments with `vllm serve`'s own parser and checks."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="serve_app"))
    args = parser.parse_args(serve_argv(model))
    args.model = args.model_tag
    validate_parsed_serve_args(args)
    return args


class VLLMEngine:
    """One vLLM engine (and its tensor/pipeline workers) owned by one replica."""

    def __init__(self, model: ModelConfig) -> None:
        self._model = model
        self._engine: Any = None
        self._servings: dict[str, tuple[Any, type, str]] = {}
        self._priority_scheduling = False

    async def start(self) -> None:
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        # Every full collection rescans every live object, and importing vLLM leaves about
        # 650,000 (one collection: 0.38 s): the start-up's dozen full collections took
        # 0.1-0.5 s each, about 3 s of a CPU replica's cold start. These objects live as
        # long as the process, so they leave the collector's view now (Serve collects and
        # freezes again once the replica is up; the forked engine core inherits the frozen heap).
        gc.freeze()

        args = parse_serve_args(self._model)
        engine_args = AsyncEngineArgs.from_cli_args(args)
        vllm_config = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
        self._priority_scheduling = vllm_config.scheduler_config.policy == "priority"
        executor = resolve_executor(self._model)
        if executor == "ray":
            import ray.util

            vllm_config.parallel_config.placement_group = ray.util.get_current_placement_group()
        run_single_worker_in_engine_core(self._model, executor, vllm_config)
        with cpu_engine_processes(self._model, vllm_config):
            self._engine = AsyncLLM.from_vllm_config(
                vllm_config=vllm_config,
                usage_context=UsageContext.OPENAI_API_SERVER,
                enable_log_requests=engine_args.enable_log_requests,
                disable_log_stats=engine_args.disable_log_stats,
            )
        state = State()
        await init_app_state(self._engine, state, args, await self._engine.get_supported_tasks())
        lean_chat_stream.install(state.openai_serving_chat)
        self._servings = {
            "chat": (state.openai_serving_chat, ChatCompletionRequest, "create_chat_completion"),
            "completion": (state.openai_serving_completion, CompletionRequest, "create_completion"),
        }

    async def handle(self, request: EngineRequest) -> Reply:
        from pydantic import BaseModel, ValidationError
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        serving, request_type, method = self._servings[request.endpoint]
        try:
            parsed = request_type.model_validate(self._engine_body(request))
        except ValidationError as error:
            return _error_reply(400, _first_error(error), _first_param(error))
        try:
            result = await getattr(serving, method)(parsed, None)
        except Exception as error:  # vLLM raises for bad input; map as its server does
            result = serving.create_error_response(error)
        if isinstance(result, ErrorResponse):
            if self._engine.errored:  # vLLM says 500; for the client it is a transient outage
                return _error_reply(503, ENGINE_DEAD_MESSAGE, None, code="engine_unavailable",
                                    headers={"Retry-After": "1"})
            return _error_reply(result.error.code, result.error.message, result.error.param)
        if isinstance(result, BaseModel):
            return Reply(ReplyHead(200, False), _once(result.model_dump_json().encode()))
        return Reply(ReplyHead(200, True), _encoded(result, client_wants_usage(request.body.get("stream_options"))))

    def _engine_body(self, request: EngineRequest) -> dict[str, Any]:
        """The body vLLM's serving layer gets: the engine queue's priority is admission's
        to give (a client's `priority` field would jump the fair queue), and only an
        engine that schedules by priority accepts one other than 0."""
        body = {**request.body, "request_id": request.request_id}
        body.pop("priority", None)
        if body.get("stream"):
            body["stream_options"] = engine_stream_options(body.get("stream_options"))
        if self._priority_scheduling and request.priority:
            body["priority"] = request.priority
        return body

    async def check_health(self) -> None:
        if self._engine is None:
            raise EngineDead("engine not started")
        try:
            await self._engine.check_health()
        except Exception as error:
            raise EngineDead(f"vLLM engine is dead: {error}") from error

    def stats(self) -> EngineStats:
        if self._engine is None or self._engine.errored:  # admission stops counting this replica
            return EngineStats()
        config = self._engine.vllm_config
        blocks = config.cache_config.num_gpu_blocks or 0
        return EngineStats(
            running=self._engine.get_num_unfinished_requests(),
            kv_capacity_tokens=blocks * config.cache_config.block_size,
            max_num_seqs=config.scheduler_config.max_num_seqs,
            max_model_len=config.model_config.max_model_len,
        )

    async def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


async def _encoded(frames: AsyncIterator[str], show_usage: bool) -> AsyncIterator[bytes | Usage]:
    """The frames, the final usage chunk only if the client asked for it, then the usage."""
    usage = None
    try:
        async for frame in frames:
            data = frame.encode()
            if usage is None and FINAL_USAGE_MARK in data:
                usage = usage_in(data)
                if not show_usage:
                    continue
            yield data
        if usage is not None:
            yield usage
    finally:
        await frames.aclose()  # aborts the engine request when the client is gone


def _error_reply(status: int, message: str, param: str | None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
    body = error_body(message, HTTPStatus(status), param=param, code=code or context_code(message))
    return Reply(ReplyHead(status, False, headers or {}), _once(json.dumps(body).encode()))


def _first_error(error: Any) -> str:
    item = error.errors()[0]
    where = ".".join(str(part) for part in item["loc"])
    return f"{where}: {item['msg']}" if where else item["msg"]


def _first_param(error: Any) -> str | None:
    loc = error.errors()[0]["loc"]
    return str(loc[0]) if loc else None
