"""What the vLLM engine hands vLLM's serving layer (admission's priority, never the client's; usage always
counted) and what it hands back."""

from __future__ import annotations

import pytest
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

from serve_app.config import ModelConfig
from serve_app.engines.vllm import VLLMEngine
from serve_app.outcomes import Usage
from serve_app.protocol import EngineRequest
from serve_app.usage import engine_stream_options

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


USAGE_CHUNK = 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":9,"total_tokens":13,"completion_tokens":4}}\n\n'
# Generated text that spells the usage chunk's mark reaches the wire JSON-escaped.
TOKEN_CHUNK = 'data: {"id":"c","choices":[{"index":0,"delta":{"content":"\\"choices\\":[],"}}]}\n\n'


class StreamingServing(RecordingServing):
    """Streams as vLLM's serving layer does: its usage chunk last, when include_usage is on."""

    async def create_chat_completion(self, request: ChatCompletionRequest, raw: object):
        self.requests.append(request)

        async def frames():
            yield TOKEN_CHUNK
            if request.stream_options and request.stream_options.include_usage:
                yield USAGE_CHUNK
            yield "data: [DONE]\n\n"

        return frames()


async def stream(stream_options: dict | None) -> tuple[list, ChatCompletionRequest]:
    vllm_engine, _ = engine(priority_scheduling=False)
    serving = StreamingServing()
    vllm_engine._servings = {"chat": (serving, ChatCompletionRequest, "create_chat_completion")}
    body = {**CHAT, "stream": True, **({"stream_options": stream_options} if stream_options else {})}
    reply = await vllm_engine.handle(EngineRequest("chat", body, "r1"))
    return [item async for item in reply.body], serving.requests[0]


async def test_a_stream_is_counted_even_when_the_client_asked_for_no_usage_chunk():
    items, sent = await stream(None)
    assert sent.stream_options.include_usage and not sent.stream_options.continuous_usage_stats
    assert items == [TOKEN_CHUNK.encode(), b"data: [DONE]\n\n", Usage(9, 4)]


async def test_a_client_that_asked_for_usage_gets_its_chunk_and_admission_the_count():
    items, sent = await stream({"include_usage": True})
    assert items == [TOKEN_CHUNK.encode(), USAGE_CHUNK.encode(), b"data: [DONE]\n\n", Usage(9, 4)]


def test_usage_on_every_chunk_only_comes_with_the_usage_the_client_asked_for():
    assert engine_stream_options({"continuous_usage_stats": True}) == {
        "include_usage": True, "continuous_usage_stats": False}
    assert engine_stream_options({"include_usage": True, "continuous_usage_stats": True}) == {
        "include_usage": True, "continuous_usage_stats": True}
    assert engine_stream_options(None) == {"include_usage": True, "continuous_usage_stats": False}
