"""vLLM's chat stream without three pydantic models per token, for plain-text streams.

vLLM's serving layer builds a DeltaMessage, a stream choice and a stream response for
every token of every stream and serialises them: 12-18 µs per token on these cores,
the largest single cost in a CPU replica's front end after the engine client. In a
stream that can only carry text deltas (one choice, no logprobs or token ids, no tool
or reasoning parser, no per-chunk usage, no output logging) every token chunk is the
same JSON around a different string, so it is written from a template that vLLM's own
models rendered. The role chunk, the finish chunk and the usage chunk are still built
by vLLM's models, once per stream; every other stream runs vLLM's own generator.
Written against vllm 0.32.0's `OpenAIServingChat.chat_completion_stream_generator`;
tests/engines/test_lean_chat_stream.py holds the two to the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

logger = logging.getLogger(__name__)

_json_string = json.JSONEncoder(ensure_ascii=False).encode
"""Escapes as pydantic-core does: quote, backslash and control characters only."""


def install(serving: Any) -> None:
    """Make `serving` (an OpenAIServingChat) stream plain-text chats the lean way."""
    vllm_stream = serving.chat_completion_stream_generator

    def chat_stream(request: Any, *args: Any, **kwargs: Any) -> AsyncIterator[str]:
        if is_plain(serving, request):
            return lean_stream(serving, request, *args, **kwargs)
        return vllm_stream(request, *args, **kwargs)

    serving.chat_completion_stream_generator = chat_stream


def is_plain(serving: Any, request: Any) -> bool:
    """Whether every chunk of this stream but the first and the last is a bare text delta."""
    from vllm.entrypoints.serve.utils.api_utils import should_include_usage

    _, continuous_usage = should_include_usage(request.stream_options, serving.enable_force_include_usage)
    return not (
        serving.parser_cls is not None or (request.n or 1) != 1 or request.logprobs
        or request.echo or request.return_token_ids or request.return_prompt_text
        or request.use_beam_search or continuous_usage or serving.enable_per_request_metrics
        or (serving.enable_log_outputs and serving.request_logger)
    )


class TokenChunk:
    """One stream's token chunk as vLLM renders it, with the text spliced in."""

    def __init__(self, request_id: str, created: int, model_name: str) -> None:
        empty = _chunk(request_id, created, model_name, _choice({"content": ""}, None, token_ids=None))
        cut = empty.index('"content":""') + len('"content":')
        self._before, self._after = "data: " + empty[:cut], empty[cut + 2:] + "\n\n"

    def frame(self, text: str) -> str:
        return self._before + _json_string(text) + self._after


async def lean_stream(serving: Any, request: Any, result_generator: AsyncIterator[Any], request_id: str,
                      model_name: str, conversation: Any, tokenizer: Any, request_metadata: Any,
                      chat_template_kwargs: dict[str, Any] | None = None,
                      mm_token_counts: dict[str, int] | None = None) -> AsyncIterator[str]:
    from vllm.entrypoints.serve.utils.api_utils import should_include_usage
    from vllm.exceptions import GenerationError

    created = int(time.time())
    include_usage, _ = should_include_usage(request.stream_options, serving.enable_force_include_usage)
    tokens = TokenChunk(request_id, created, model_name)
    count = _Count()
    last_res, finished = None, False
    try:
        async for res in result_generator:
            if last_res is None:
                count.cached, count.cache_creation = res.num_cached_tokens, res.num_cache_creation_tokens
                role = {"role": serving.get_chat_request_role(request), "content": ""}
                yield _sse(_chunk(request_id, created, model_name, _choice(role, None),
                                  prompt_token_ids=None, prompt_text=None))
            last_res = res
            count.prompt(res)
            for output in res.outputs:
                if finished:
                    continue
                serving._raise_if_error(output.finish_reason, request_id)
                if not output.text and not output.token_ids and not count.completion:
                    continue  # chunked prefill: no empty chunks
                count.completion += len(output.token_ids)
                if output.finish_reason is None:
                    yield tokens.frame(output.text)
                    continue
                finished = True
                yield _sse(_finish_chunk(serving, request_id, created, model_name, output, include_usage))
        if include_usage:
            yield _sse(_usage_chunk(serving, request_id, created, model_name, count, last_res, mm_token_counts))
        request_metadata.final_usage_info = count.usage_info(serving)
    except GenerationError as error:
        yield _sse(serving._convert_generation_error_to_streaming_response(error))
    except Exception as error:
        logger.exception("Error in chat completion stream generator.")
        yield _sse(serving.create_streaming_error_response(error))
    yield "data: [DONE]\n\n"


class _Count:
    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion = 0
        self.cached: int | None = None
        """Prompt tokens found in the prefix cache, as the first output reported them."""
        self.cache_creation: int | None = None

    def prompt(self, res: Any) -> None:
        if res.prompt_token_ids is not None:
            self.prompt_tokens = len(res.prompt_token_ids) + len(res.encoder_prompt_token_ids or ())

    def usage_info(self, serving: Any) -> Any:
        from vllm.entrypoints.openai.chat_completion.serving import _make_completion_tokens_details
        from vllm.entrypoints.serve.engine.protocol import UsageInfo

        return UsageInfo(
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion,
            total_tokens=self.prompt_tokens + self.completion,
            completion_tokens_details=(_make_completion_tokens_details(0)
                                       if serving._include_reasoning_tokens_details else None),
        )


def _choice(delta: dict[str, Any], finish_reason: str | None, **fields: Any) -> Any:
    """A stream choice with exactly the fields vLLM sets on it (unset ones stay out of the JSON)."""
    from vllm.entrypoints.generate.base.protocol import DeltaMessage
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionResponseStreamChoice

    return ChatCompletionResponseStreamChoice(index=0, delta=DeltaMessage(**delta), logprobs=None,
                                              finish_reason=finish_reason, **fields)


def _chunk(request_id: str, created: int, model_name: str, choice: Any, **extra: Any) -> str:
    return _response(request_id, created, model_name, [choice], **extra).model_dump_json(exclude_unset=True)


def _response(request_id: str, created: int, model_name: str, choices: list[Any], **extra: Any) -> Any:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionStreamResponse

    return ChatCompletionStreamResponse(id=request_id, object="chat.completion.chunk", created=created,
                                        choices=choices, model=model_name, **extra)


def _finish_chunk(serving: Any, request_id: str, created: int, model_name: str, output: Any,
                  include_usage: bool) -> str:
    choice = _choice({"content": output.text}, output.finish_reason or "stop",
                     stop_reason=output.stop_reason, token_ids=None)
    response = _response(request_id, created, model_name, [choice])
    if not include_usage and serving.system_fingerprint is not None:
        response.system_fingerprint = serving.system_fingerprint
    return response.model_dump_json(exclude_unset=True)


def _usage_chunk(serving: Any, request_id: str, created: int, model_name: str, count: _Count,
                 last_res: Any, mm_token_counts: dict[str, int] | None) -> str:
    from vllm.entrypoints.generate.base.serving import build_spec_decoding_metrics
    from vllm.entrypoints.openai.chat_completion.serving import _make_prompt_tokens_details

    usage = count.usage_info(serving)
    usage.prompt_tokens_details = _make_prompt_tokens_details(
        serving.enable_prompt_tokens_details, count.cached, count.cache_creation, mm_token_counts)
    metrics = None
    if (spec_stats := build_spec_decoding_metrics(last_res)) is not None:
        from vllm.entrypoints.generate.base.protocol import PerRequestMetrics

        metrics = PerRequestMetrics()
        metrics.speculative_decoding = spec_stats
    response = _response(request_id, created, model_name, [], usage=usage,
                         system_fingerprint=serving.system_fingerprint, metrics=metrics)
    return response.model_dump_json(exclude_unset=True, exclude_none=True)


def _sse(data: str) -> str:
    return f"data: {data}\n\n"
