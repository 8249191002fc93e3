"""The lean chat stream sends exactly the bytes vLLM's own chat stream generator sends, and
hands every stream it cannot write that way to vLLM's."""

from __future__ import annotations

import time

import pytest
from vllm.entrypoints.generate.base.protocol import RequestResponseMetadata
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
from vllm.outputs import CompletionOutput, RequestOutput

from serve_app.engines.lean_chat_stream import install, is_plain, lean_stream

TRICKY_TEXT = ' "quoted" back\\slash new\nline\ttab \x01\x1f\x7f é 😀 \u2028 </script>'


def serving(fingerprint: str | None = None, prompt_details: bool = False) -> OpenAIServingChat:
    """vLLM's chat serving object with only what its stream generator reads."""
    made = OpenAIServingChat.__new__(OpenAIServingChat)
    made.parser_cls = None
    made.response_role = "assistant"
    made.enable_force_include_usage = False
    made.enable_log_outputs = False
    made.request_logger = None
    made.system_fingerprint = fingerprint
    made._include_reasoning_tokens_details = False
    made.enable_per_request_metrics = False
    made.enable_prompt_tokens_details = prompt_details
    made.log_error_stack = False
    return made


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], stream=True, **fields)


def output(text: str, token_ids: list[int], finish_reason: str | None = None,
           stop_reason: int | str | None = None) -> RequestOutput:
    completion = CompletionOutput(index=0, text=text, token_ids=token_ids, cumulative_logprob=None,
                                  logprobs=None, finish_reason=finish_reason, stop_reason=stop_reason)
    return RequestOutput("r", None, [1, 2, 3], None, [completion], finish_reason is not None,
                         num_cached_tokens=2)


STREAM = [output("", []), output(" Hello", [5]), output(TRICKY_TEXT, [6, 7]),
          output("!", [8], finish_reason="stop", stop_reason=581)]


async def frames(generate, chat: OpenAIServingChat, req: ChatCompletionRequest, outputs: list,
                 fail_with: Exception | None = None) -> tuple[list[str], object]:
    async def results():
        for item in outputs:
            yield item
        if fail_with is not None:
            raise fail_with

    metadata = RequestResponseMetadata(request_id="chatcmpl-r")
    sent = [frame async for frame in generate(chat, req, results(), "chatcmpl-r", "m", [], None, metadata)]
    return sent, metadata.final_usage_info


async def both(chat: OpenAIServingChat, req: ChatCompletionRequest, outputs: list, **kwargs):
    vllm = await frames(OpenAIServingChat.chat_completion_stream_generator, chat, req, outputs, **kwargs)
    lean = await frames(lean_stream, chat, req, outputs, **kwargs)
    return vllm, lean


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)


@pytest.mark.parametrize("stream_options", [None, {"include_usage": True}])
@pytest.mark.parametrize("fingerprint", [None, "fp_1"])
async def test_a_plain_stream_is_byte_for_byte_vllms(stream_options, fingerprint):
    chat = serving(fingerprint=fingerprint, prompt_details=True)
    vllm, lean = await both(chat, request(stream_options=stream_options), STREAM)
    assert lean == vllm
    assert len(lean[0]) == 5 + bool(stream_options)  # role, 2 tokens (prefill skipped), finish, [DONE]


async def test_a_stream_cut_by_the_length_limit_finishes_as_vllms():
    outputs = [output(" a", [5]), output(" b", [6], finish_reason="length")]
    vllm, lean = await both(serving(), request(stream_options={"include_usage": True}), outputs)
    assert lean == vllm


async def test_an_engine_error_mid_stream_ends_as_vllms():
    outputs = [output(" a", [5]), output("", [], finish_reason="error")]
    vllm, lean = await both(serving(), request(), outputs)
    assert lean == vllm
    assert '"error"' in lean[0][-2]


async def test_an_exception_from_the_engine_ends_as_vllms():
    vllm, lean = await both(serving(), request(), STREAM[:2], fail_with=ValueError("engine went away"))
    assert lean == vllm
    assert lean[0][-1] == "data: [DONE]\n\n"


@pytest.mark.parametrize("fields", [
    {"n": 2}, {"logprobs": True}, {"return_token_ids": True}, {"echo": True},
    {"stream_options": {"include_usage": True, "continuous_usage_stats": True}},
])
def test_a_stream_that_needs_more_than_text_deltas_is_not_plain(fields):
    assert not is_plain(serving(), request(**fields))
    assert is_plain(serving(), request(stream_options={"include_usage": True}))


def test_a_server_with_a_parser_or_output_logging_streams_through_vllm():
    with_parser, logging_outputs = serving(), serving()
    with_parser.parser_cls = object
    logging_outputs.enable_log_outputs, logging_outputs.request_logger = True, object()
    assert not is_plain(with_parser, request())
    assert not is_plain(logging_outputs, request())


async def test_install_routes_plain_streams_lean_and_the_rest_to_vllm():
    chat = serving()
    chosen = []
    chat.chat_completion_stream_generator = lambda req, *args, **kw: chosen.append("vllm") or "vllm-stream"
    install(chat)
    assert chat.chat_completion_stream_generator(request(n=2), None) == "vllm-stream"
    lean = chat.chat_completion_stream_generator(request(), None, "id", "m", [], None, None)
    assert chosen == ["vllm"] and lean.__name__ == "lean_stream"
    await lean.aclose()
