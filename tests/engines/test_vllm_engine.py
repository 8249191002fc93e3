"""What the vLLM engine hands vLLM's serving layer: admission's priority, never the client's."""

from __future__ import annotations

import pytest
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

from serve_app.config import ModelConfig
from serve_app.engines.vllm import VLLMEngine
from serve_app.protocol import EngineRequest

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


class RecordingServing:
    def __init__(self) -> None:
        self.requests: list[ChatCompletionRequest] = []

    async def create_chat_completion(self, request: ChatCompletionRequest, raw: object) -> ChatCompletionRequest:
        self.requests.append(request)
        return request  # any pydantic model is a complete, non-streamed reply


def engine(priority_scheduling: bool) -> tuple[VLLMEngine, RecordingServing]:
    made = VLLMEngine(ModelConfig(name="m", source="/m", device="cpu"))
    serving = RecordingServing()
    made._servings = {"chat": (serving, ChatCompletionRequest, "create_chat_completion")}
    made._priority_scheduling = priority_scheduling
    return made, serving


@pytest.mark.parametrize(("scheduling", "expected"), [(True, 1), (False, 0)])
async def test_the_engine_queue_priority_is_admissions_and_never_the_clients(scheduling, expected):
    vllm_engine, serving = engine(priority_scheduling=scheduling)
    reply = await vllm_engine.handle(EngineRequest("chat", {**CHAT, "priority": -100}, "r1", priority=1))
    assert reply.head.status == 200
    assert serving.requests[0].priority == expected
    assert serving.requests[0].request_id == "r1"
