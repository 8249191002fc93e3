"""Reading an OpenAI chat-completions event stream, line by line."""

import json

from bench.sse import data_of, parse_chunk


def event(**fields) -> str:
    return json.dumps({"object": "chat.completion.chunk", **fields})


def delta(**fields) -> str:
    return event(choices=[{"index": 0, "delta": fields, "finish_reason": None}])


class TestDataLines:
    def test_payload_follows_data_colon_and_one_optional_space(self):
        assert data_of('data: {"a": 1}') == '{"a": 1}'
        assert data_of('data:{"a": 1}') == '{"a": 1}'
        assert data_of("data:  two spaces") == " two spaces"

    def test_comments_other_fields_and_blank_lines_carry_no_data(self):
        for line in (": keep-alive", "event: message", "id: 7", "retry: 100", ""):
            assert data_of(line) is None


class TestChunks:
    def test_content_is_output(self):
        chunk = parse_chunk(delta(content=" hello"))
        assert (chunk.content, chunk.output, chunk.done) == (" hello", True, False)

    def test_the_opening_role_announcement_is_not_a_token(self):
        assert not parse_chunk(delta(role="assistant", content="")).output

    def test_a_token_whose_text_is_held_back_is_still_output(self):
        # vLLM streams content "" for a token that ends inside a UTF-8 character.
        chunk = parse_chunk(delta(content=""))
        assert chunk.output and chunk.content == ""

    def test_reasoning_tokens_are_output(self):
        assert parse_chunk(delta(reasoning_content="hmm")).output

    def test_a_finish_chunk_without_content_is_not_output(self):
        finish = event(choices=[{"index": 0, "delta": {}, "finish_reason": "length"}])
        assert not parse_chunk(finish).output

    def test_usage_chunk_has_no_choices(self):
        usage = {"prompt_tokens": 78, "completion_tokens": 5, "total_tokens": 83}
        chunk = parse_chunk(event(choices=[], usage=usage))
        assert chunk.usage == usage and not chunk.output

    def test_null_usage_is_no_usage(self):
        assert parse_chunk(event(choices=[], usage=None)).usage is None

    def test_done_marker_ends_the_stream(self):
        assert parse_chunk("[DONE]").done

    def test_error_events_carry_their_message(self):
        chunk = parse_chunk(json.dumps({"error": {"message": "engine died", "code": 500}}))
        assert chunk.error == "engine died"
        assert parse_chunk(json.dumps({"error": "plain"})).error == "plain"

    def test_undecodable_payloads_are_errors_not_exceptions(self):
        assert "undecodable" in parse_chunk("{not json").error
        assert parse_chunk("[1, 2]").error is not None


def test_a_real_vllm_stream_reads_as_five_tokens_and_usage():
    # Recorded from vLLM 0.32's OpenAI server with max_tokens 5 and include_usage.
    recorded = [
        'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null}',
        "",
        'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"mber"},"logprobs":null,"finish_reason":null,"token_ids":null}]}',
        'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":null,"token_ids":null}]}',
        'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"\\ufffd en"},"logprobs":null,"finish_reason":null,"token_ids":null}]}',
        'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Five"},"logprobs":null,"finish_reason":null,"token_ids":null}]}',
        'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" g"},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}]}',
        'data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":78,"total_tokens":83,"completion_tokens":5}}',
        "data: [DONE]",
    ]
    chunks = [parse_chunk(payload) for payload in map(data_of, recorded) if payload is not None]
    assert sum(chunk.output for chunk in chunks) == 5
    assert chunks[-2].usage["completion_tokens"] == 5
    assert chunks[-1].done
