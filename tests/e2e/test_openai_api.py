"""The OpenAI-compatible API, end to end: real Ray, Serve's proxy, vLLM, the openai client."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.e2e.fault_load import Ended, Report
from tests.e2e.stack import API_KEY, Stack

MESSAGES = [{"role": "user", "content": "Write a limerick about the wonders of GPU computing."}]


def raw(stack: Stack, path: str, body: object = None, *, key: str | None = API_KEY, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers |= kwargs.pop("headers", {})
    if body is None:
        return httpx.get(stack.base_url + path, headers=headers, timeout=60, **kwargs)
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers.setdefault("Content-Type", "application/json")
    return httpx.post(stack.base_url + path, content=content, headers=headers, timeout=60, **kwargs)


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param:
        assert error["param"] == param
    return error


def test_models_lists_the_configured_model(client):
    models = client.models.list()
    assert [model.id for model in models.data] == ["tiny-llama"]


def test_chat_completion_answers_with_usage(client):
    completion = client.chat.completions.create(
        model="tiny-llama", messages=MESSAGES, temperature=0.5, top_p=1, max_tokens=16)
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 16
    assert completion.usage.prompt_tokens > 10  # the chat template wrapped the message


def test_chat_completion_streams_chunks_until_done(client):
    stream = client.chat.completions.create(
        model="tiny-llama", messages=MESSAGES, max_tokens=12, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens == 12


@pytest.mark.parametrize("extra", [{}, {"logprobs": True}], ids=["plain-text-stream", "stream-with-logprobs"])
def test_a_stream_says_what_the_whole_reply_says(client, extra):
    # A plain stream goes through the replica's lean path, one with logprobs through vLLM's generator.
    asked = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 24, "temperature": 0, **extra}
    whole = client.chat.completions.create(**asked).choices[0]
    chunks = [chunk for chunk in client.chat.completions.create(**asked, stream=True) if chunk.choices]
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == whole.message.content
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason == "length"


def test_stream_ends_with_done_marker(stack):
    body = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    response = raw(stack, "/v1/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: ") for event in events)


@pytest.mark.parametrize(("path", "stream_options"), [
    ("/v1/chat/completions", None), ("/v1/chat/completions", {"continuous_usage_stats": True}),
    ("/v1/completions", None)], ids=["chat", "chat-continuous-only", "completion"])
def test_a_stream_carries_usage_only_when_the_client_asked_for_it(stack, path, stream_options):
    # The replica always asks vLLM for its usage chunk (admission's count) and drops it here.
    prompt = {"messages": MESSAGES} if "chat" in path else {"prompt": "Once upon a time"}
    body = {"model": "tiny-llama", **prompt, "max_tokens": 4, "stream": True}
    if stream_options:
        body["stream_options"] = stream_options
    events = [line for line in raw(stack, path, body).text.split("\n\n") if line]
    chunks = [json.loads(event[len("data: "):]) for event in events[:-1]]
    assert chunks and all(chunk["choices"] and "usage" not in chunk for chunk in chunks)


def test_sampling_is_reproducible_with_a_seed(client):
    def once() -> str:
        return client.chat.completions.create(
            model="tiny-llama", messages=MESSAGES, max_tokens=8, temperature=1.0, seed=7,
        ).choices[0].message.content

    assert once() == once()


def test_stop_and_n_are_honoured(client):
    completion = client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=6, n=2)
    assert len(completion.choices) == 2


def test_completions_endpoint_non_stream_and_stream(client):
    completion = client.completions.create(model="tiny-llama", prompt="Once upon a time", max_tokens=5)
    assert completion.usage.completion_tokens == 5
    chunks = list(client.completions.create(model="tiny-llama", prompt="Hello", max_tokens=5, stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)


def test_missing_or_wrong_key_is_refused_with_401(stack, client):
    assert_openai_error(raw(stack, "/v1/chat/completions", {"model": "tiny-llama"}, key=None), 401)
    wrong = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=2)
    assert_openai_error(raw(stack, "/v1/models", key="sk-wrong"), 401)


def test_bad_parameters_are_400_naming_the_parameter(stack, client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-llama", messages=MESSAGES, temperature=7)
    body = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": "many"}
    assert_openai_error(raw(stack, "/v1/chat/completions", body), 400, param="max_tokens")
    body = {"model": "tiny-llama", "messages": [{"role": "wizard", "content": "hi"}]}
    assert_openai_error(raw(stack, "/v1/chat/completions", body), 400, param="messages")
    body = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 0}
    assert_openai_error(raw(stack, "/v1/chat/completions", body), 400, param="max_tokens")


def test_malformed_json_is_400(stack):
    assert_openai_error(raw(stack, "/v1/chat/completions", b'{"model": "tiny-llama", "messages": ['), 400)
    assert_openai_error(raw(stack, "/v1/chat/completions", b"\xff\xfe\x00garbage"), 400)
    assert_openai_error(raw(stack, "/v1/chat/completions", b"[1, 2, 3]"), 400)


def test_prompt_longer_than_the_context_is_400(stack, client):
    long = [{"role": "user", "content": "hello " * 3000}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-llama", messages=long, max_tokens=4)
    assert refused.value.code == "context_length_exceeded"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="gpt-17", messages=MESSAGES)
    assert refused.value.code == "model_not_found"


def test_max_tokens_above_the_cap_is_400(stack, client):
    cap = stack.config.models[0].limits.max_output_tokens
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=cap + 1)
    assert refused.value.param == "max_tokens"


def test_body_over_the_size_limit_is_413(stack):
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert_openai_error(raw(stack, "/v1/chat/completions", body), 413)


def test_client_disconnect_mid_stream_aborts_the_engine_request(stack):
    body = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 1000, "stream": True,
            "ignore_eos": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    started = time.monotonic()
    with httpx.stream("POST", stack.base_url + "/v1/chat/completions", json=body, headers=headers,
                      timeout=60) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
        assert stack.running_in_engine() == 1
    left_at = time.monotonic()
    while stack.running_in_engine() and time.monotonic() < left_at + 20:
        time.sleep(0.2)
    Report("client disconnect mid-stream (real vLLM)", [Ended("left", started, left_at)],
           time.monotonic() - left_at, note="recovery: until the engine runs no request").print()
    assert stack.running_in_engine() == 0


def test_every_response_carries_a_request_id(stack):
    assert raw(stack, "/v1/models").headers["x-request-id"]
    echoed = raw(stack, "/v1/models", headers={"x-request-id": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"


def test_health_and_ready(stack):
    assert raw(stack, "/health", key=None).json() == {"status": "ok"}
    assert raw(stack, "/ready", key=None).status_code == 200


def test_unknown_route_and_wrong_method_are_openai_shaped(stack):
    assert_openai_error(raw(stack, "/v1/nothing-here"), 404)
    assert_openai_error(raw(stack, "/v1/chat/completions"), 405)
