"""The LLMServer deployment: one replica owns one engine (and its parallel workers).

Replicas are built from a model's config by `llm_server_deployment`: placement
group bundles and strategy, autoscaling, health checks and graceful shutdown all
come from that config.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import replace

from ray import serve

from serve_app.capacity_reporter import CapacityReporter
from serve_app.channel.outbox import Outbox, Outboxes
from serve_app.config import ModelConfig
from serve_app.engines.base import Engine
from serve_app.engines.vllm_args import engine_env
from serve_app.outcomes import Usage
from serve_app.placement import placement_strategy, replica_bundles
from serve_app.protocol import EngineRequest, EngineStats, ReplyHead

logger = logging.getLogger("ray.serve")


def make_engine(model: ModelConfig) -> Engine:
    """The engine named by the config; vLLM is imported only when it is chosen."""
    if model.engine == "simulated":
        from serve_app.engines.simulated import SimulatedEngine

        return SimulatedEngine(model)
    from serve_app.engines.vllm import VLLMEngine

    return VLLMEngine(model)


class LLMServer:
    """Serves one model: OpenAI requests in, a reply head then body chunks out."""

    async def __init__(self, model: ModelConfig) -> None:
        os.environ.update(engine_env(model, sorted(os.sched_getaffinity(0))))
        self._model = model
        self._engine = make_engine(model)
        self._outboxes = Outboxes()
        self._reporter = CapacityReporter(model.name, self._engine.stats)
        await self._engine.start()
        logger.info("engine for %s ready: %s", model.name, self._engine.stats())
        self._reporter.start()  # admission counts this replica's capacity from now on

    async def generate(self, request: EngineRequest) -> AsyncIterator[ReplyHead | bytes | Usage]:
        """The reply head, then the body (a stream's ending with its usage): here, or over
        the router's token channel."""
        reply = await self._engine.handle(request)
        if not (reply.head.stream and request.reply_to):
            yield reply.head
            async for chunk in reply.body:
                yield chunk
            return
        outbox = await self._outboxes.get(request.reply_to)
        yield replace(reply.head, via_channel=True)
        await send_over_channel(outbox, request.request_id.encode(), reply.body)


    def stats(self) -> EngineStats:
        return self._engine.stats()

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def __del__(self) -> None:
        self._reporter.stop()
        self._outboxes.close()
        await self._engine.shutdown()


async def send_over_channel(outbox: Outbox, request_id: bytes, body: AsyncIterator[bytes | Usage]) -> None:
    """Forward a stream's chunks, and its usage with its end; closing the body (on any
    exit) aborts the engine request."""
    usage = None
    try:
        async for chunk in body:
            if isinstance(chunk, bytes):
                outbox.data(request_id, chunk)
            else:
                usage = chunk
        outbox.end(request_id, usage)
    finally:
        await body.aclose()


def llm_server_deployment(model: ModelConfig) -> serve.Deployment:
    """The Serve deployment for one model, named after it."""
    scaling = model.autoscaling
    autoscaling_config = {
        "min_replicas": scaling.min_replicas,
        "max_replicas": scaling.max_replicas,
        "target_ongoing_requests": scaling.target_ongoing_requests,
        "upscale_delay_s": scaling.upscale_delay_s,
        "downscale_delay_s": scaling.downscale_delay_s,
    }
    if scaling.initial_replicas is not None:
        autoscaling_config["initial_replicas"] = scaling.initial_replicas
    return serve.deployment(LLMServer).options(
        name=deployment_name(model),
        autoscaling_config=autoscaling_config,
        max_ongoing_requests=scaling.max_ongoing_requests,
        ray_actor_options={"num_cpus": model.resources.num_cpus},
        placement_group_bundles=replica_bundles(model),
        placement_group_strategy=placement_strategy(model),
        health_check_period_s=model.health_check_period_s,
        health_check_timeout_s=model.health_check_timeout_s,
        graceful_shutdown_timeout_s=model.graceful_shutdown_timeout_s,
    )


def deployment_name(model: ModelConfig) -> str:
    safe = "".join(char if char.isalnum() else "-" for char in model.name)
    return f"LLMServer_{safe}"
