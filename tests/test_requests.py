"""Request bodies, specified: strict types, OpenAI ranges, unknown fields passed on to the engine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from serve_app.requests import REQUEST_TYPES, ChatRequest, CompletionRequest

USER = {"role": "user", "content": "Hello"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "messages": [USER], **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "prompt": "Once upon a time", **fields}


# --- valid bodies ---------------------------------------------------------------------

def test_minimal_chat_body_is_accepted_with_defaults():
    request = ChatRequest.model_validate(chat())
    assert request.model == "tiny-llama"
    assert request.messages[0].role == "user" and request.messages[0].content == "Hello"
    assert request.n == 1 and request.stream is False
    assert request.requested_output_tokens() is None


def test_full_chat_body_is_accepted():
    body = chat(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "No markdown."},
            {"role": "user", "content": "Hi", "name": "ann"},
            {"role": "assistant", "content": None},
            {"role": "tool", "content": "42", "tool_call_id": "call-1"},
        ],
        max_tokens=64, max_completion_tokens=32, n=2, temperature=0.7, top_p=0.9,
        presence_penalty=-1.5, frequency_penalty=2.0, seed=7, stop=["\n", "END"],
        stream=True, stream_options={"include_usage": True}, user="u-1",
        logprobs=True, top_logprobs=5,
    )
    request = ChatRequest.model_validate(body)
    assert request.stream and request.stream_options.include_usage
    assert request.stop == ["\n", "END"]
    assert request.messages[4].model_extra == {"tool_call_id": "call-1"}


@pytest.mark.parametrize("prompt, n, sequences", [
    ("once", 1, 1), ("once", 3, 3), ([1, 2, 3], 2, 2), (["a", "b"], 1, 2), ([[1], [2], [3]], 2, 6),
])
def test_a_completion_runs_n_sequences_for_each_prompt_of_a_batch(prompt, n, sequences):
    assert CompletionRequest.model_validate(completion(prompt=prompt, n=n)).sequences() == sequences


def test_a_chat_runs_n_sequences():
    assert ChatRequest.model_validate(chat(n=4)).sequences() == 4


def test_tool_definitions_and_earlier_tool_calls_count_towards_the_prompt():
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "the city to look up"}}}}}]
    calls = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]
    plain = ChatRequest.model_validate(chat())
    with_tools = ChatRequest.model_validate(chat(tools=tools))
    with_history = ChatRequest.model_validate(chat(messages=[USER, {"role": "assistant", "tool_calls": calls}]))
    assert with_tools.prompt_chars() == plain.prompt_chars() + len(json.dumps(tools, separators=(",", ":")))
    assert with_history.prompt_chars() == plain.prompt_chars() + len(json.dumps(calls, separators=(",", ":")))


def test_content_parts_are_accepted_and_text_parts_counted():
    body = chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this picture?"},
    ]}])
    request = ChatRequest.model_validate(body)
    assert request.prompt_chars() == len("What is in ") + len("this picture?")


def test_integer_temperature_is_a_number():
    assert ChatRequest.model_validate(chat(temperature=1)).temperature == 1


def test_unknown_fields_pass_through_in_model_extra():
    request = ChatRequest.model_validate(chat(top_k=40, ignore_eos=True, min_p=0.05,
                                              chat_template_kwargs={"enable_thinking": False}))
    assert request.model_extra == {"top_k": 40, "ignore_eos": True, "min_p": 0.05,
                                   "chat_template_kwargs": {"enable_thinking": False}}
    assert request.model_dump()["top_k"] == 40


@pytest.mark.parametrize(
    "prompt", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]],
    ids=["string", "strings", "token-ids", "token-id-lists"],
)
def test_completion_prompt_forms_are_accepted(prompt):
    request = CompletionRequest.model_validate(completion(prompt=prompt, logprobs=3, echo=True,
                                                          ignore_eos=True))
    assert request.prompt == prompt
    assert request.model_extra == {"ignore_eos": True}


def test_request_types_map_endpoint_kinds():
    assert REQUEST_TYPES == {"chat": ChatRequest, "completion": CompletionRequest}


# --- requested output tokens ----------------------------------------------------------

def test_requested_output_tokens_prefers_max_completion_tokens():
    assert ChatRequest.model_validate(chat(max_tokens=100, max_completion_tokens=30)).requested_output_tokens() == 30
    assert ChatRequest.model_validate(chat(max_tokens=100)).requested_output_tokens() == 100
    assert ChatRequest.model_validate(chat(max_completion_tokens=30)).requested_output_tokens() == 30


def test_completion_requested_output_tokens_is_max_tokens():
    assert CompletionRequest.model_validate(completion(max_tokens=9)).requested_output_tokens() == 9
    assert CompletionRequest.model_validate(completion()).requested_output_tokens() is None


# --- invalid bodies -------------------------------------------------------------------

@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": "10"}, {"temperature": "0.5"}, {"n": "2"}, {"seed": "1"},
        {"top_p": "1"}, {"stream": "true"},
    ],
    ids=lambda fields: f"string-{next(iter(fields))}",
)
def test_strings_are_not_numbers_or_bools(fields):
    with pytest.raises(ValidationError):
        ChatRequest.model_validate(chat(**fields))


@pytest.mark.parametrize(
    "fields",
    [{"max_tokens": True}, {"n": True}, {"seed": False}, {"max_completion_tokens": True},
     {"top_logprobs": True}, {"max_tokens": 10.0}, {"n": 2.5}],
    ids=["bool-max_tokens", "bool-n", "bool-seed", "bool-max_completion_tokens",
         "bool-top_logprobs", "float-max_tokens", "float-n"],
)
def test_bools_and_floats_are_not_ints(fields):
    with pytest.raises(ValidationError):
        ChatRequest.model_validate(chat(**fields))


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 2.01}, {"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.01},
        {"n": 0}, {"n": 17}, {"max_tokens": 0}, {"max_tokens": -5},
        {"max_completion_tokens": 0}, {"presence_penalty": 2.5}, {"frequency_penalty": -3},
        {"top_logprobs": 21}, {"seed": 2**64}, {"stop": ["x"] * 17},
    ],
    ids=lambda fields: "-".join(f"{key}={value}" for key, value in fields.items())[:40],
)
def test_out_of_range_values_are_refused(fields):
    with pytest.raises(ValidationError):
        ChatRequest.model_validate(chat(**fields))


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "robot", "content": "hi"}]},
        {"model": "m", "messages": [{"content": "hi"}]},
        {"model": "m", "messages": "hi"},
        {"model": "m", "messages": [{"role": "user", "content": 5}]},
        {"model": "m", "messages": [{"role": "user"}]},
        {"model": "m", "messages": [USER, {"role": "tool", "content": None}]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
        {"messages": [USER]},
        {"model": "", "messages": [USER]},
        {"model": 5, "messages": [USER]},
        {"model": "m"},
    ],
    ids=["empty-messages", "invalid-role", "missing-role", "messages-string", "content-number",
         "user-without-content", "tool-null-content",
         "text-part-number", "missing-model", "empty-model", "model-number", "missing-messages"],
)
def test_malformed_chat_bodies_are_refused(body):
    with pytest.raises(ValidationError):
        ChatRequest.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [{"prompt": "x"}, {"model": "m"}, {"model": "m", "prompt": 5}, {"model": "m", "prompt": [1, "a"]},
     {"model": "m", "prompt": "x", "max_tokens": 0}, {"model": "m", "prompt": "x", "logprobs": True}],
    ids=["missing-model", "missing-prompt", "prompt-number", "prompt-mixed", "max-tokens-0",
         "bool-logprobs"],
)
def test_malformed_completion_bodies_are_refused(body):
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate(body)


# --- property: validation fails only with ValidationError -------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)

FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "n", "temperature",
          "top_p", "presence_penalty", "frequency_penalty", "seed", "stop", "stream",
          "stream_options", "user", "logprobs", "top_logprobs", "echo", "top_k", "model_config",
          "__class__", "model_extra"]

message_like = st.fixed_dictionaries(
    {}, optional={"role": st.sampled_from(["user", "assistant", "robot"]) | json_values,
                  "content": json_values | st.lists(st.fixed_dictionaries(
                      {}, optional={"type": st.just("text") | json_values, "text": json_values})),
                  "name": json_values},
)

bodies = (
    st.dictionaries(st.text(max_size=10), json_values, max_size=6)
    | st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
    | st.fixed_dictionaries({"model": st.text(max_size=5), "messages": st.lists(message_like, max_size=3)},
                            optional={key: json_values for key in FIELDS[3:]})
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, kind=st.sampled_from(sorted(REQUEST_TYPES)))
def test_validation_either_succeeds_or_raises_validation_error(body, kind):
    request_type = REQUEST_TYPES[kind]
    try:
        request = request_type.model_validate(body)
    except ValidationError:
        return
    request.requested_output_tokens()
    request.prompt_chars()
    assert request.sequences() >= 1
