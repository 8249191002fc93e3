"""Workloads: OpenAI chat bodies with exact output lengths and controlled prompts."""

import statistics

from bench.workload import WORDS, Workload, chat_body, fixed_lengths, shared_prefix, sharegpt_like


def user_text(spec) -> str:
    return spec.body["messages"][-1]["content"]


class TestChatBody:
    def test_asks_for_exactly_max_tokens_and_streams_usage(self):
        body = chat_body("tiny", [{"role": "user", "content": "hi"}], 64, stream=True)
        assert body["max_tokens"] == 64
        assert body["ignore_eos"] is True
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}

    def test_without_streaming_has_no_stream_options(self):
        body = chat_body("tiny", [], 8, stream=False)
        assert body["stream"] is False and "stream_options" not in body


class TestFixedLengths:
    def test_prompts_have_the_asked_number_of_known_words(self):
        specs = fixed_lengths("tiny", 5, input_tokens=100, output_tokens=32, stream=True)
        assert len(specs) == 5
        for spec in specs:
            assert len(user_text(spec).split()) == 100
            assert set(user_text(spec).split()) <= set(WORDS)
            assert (spec.input_tokens, spec.output_tokens) == (100, 32)
            assert spec.body["model"] == "tiny"

    def test_prompts_differ_so_no_prefix_cache_helps(self):
        specs = fixed_lengths("tiny", 20, 50, 8, True)
        assert len({user_text(spec) for spec in specs}) == 20

    def test_is_seeded(self):
        def make(seed: int):
            return fixed_lengths("m", 3, 10, 4, True, seed=seed)

        assert make(1) == make(1)
        assert make(1) != make(2)


class TestShareGptLike:
    def test_lengths_are_long_tailed_around_their_medians_and_capped(self):
        specs = sharegpt_like("m", 2000, stream=True, seed=3, input_median=200, output_median=150)
        inputs = [s.input_tokens for s in specs]
        outputs = [s.output_tokens for s in specs]
        assert 170 <= statistics.median(inputs) <= 230
        assert 125 <= statistics.median(outputs) <= 175
        assert statistics.fmean(inputs) > statistics.median(inputs)  # a right tail
        assert max(inputs) <= 1024 and max(outputs) <= 512 and min(outputs) >= 1

    def test_bodies_match_their_lengths(self):
        for spec in sharegpt_like("m", 50, stream=False, seed=1):
            assert len(user_text(spec).split()) == spec.input_tokens
            assert spec.body["max_tokens"] == spec.output_tokens


class TestSharedPrefix:
    def test_every_request_shares_one_system_prompt_and_differs_after_it(self):
        specs = shared_prefix("m", 10, prefix_tokens=500, suffix_tokens=20, output_tokens=16,
                              stream=True)
        systems = {spec.body["messages"][0]["content"] for spec in specs}
        assert len(systems) == 1 and len(systems.pop().split()) == 500
        assert len({user_text(spec) for spec in specs}) == 10
        assert all(spec.input_tokens == 520 for spec in specs)


def test_a_workload_names_its_generator():
    assert len(Workload("sharegpt", requests=7).specs("m")) == 7
    prefixed = Workload("shared-prefix", requests=3, prefix_tokens=40, input_tokens=5).specs("m")
    assert prefixed[0].body["messages"][0]["role"] == "system"
    assert Workload(requests=4, stream=False).specs("m")[0].body["stream"] is False
