"""The simulated engine, specified: vLLM's wire format, vLLM's scheduling shape, honest time.

Timing tests compare against the model's own formula
(step = admitted prompt tokens / prefill_tokens_per_s + decode_step_base_s
 + decode_step_per_seq_s * (running - 1)) with generous upper bounds, because
the machine running them is noisy; lower bounds are tight, since the simulated
GPU must never be faster than its model.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import time

import pytest

from serve_app.config import Limits, ModelConfig, SimulatedEngineConfig
from serve_app.engines.base import EngineDead, Reply
from serve_app.engines.simulated import WORDS, SimulatedEngine
from serve_app.outcomes import Usage
from serve_app.protocol import EngineRequest

SLACK_S = 0.25  # extra time a noisy machine may add to a timed phase


def make_engine(**sim: object) -> SimulatedEngine:
    settings = dict(prefill_tokens_per_s=1_000_000.0, decode_step_base_s=0.005,
                    decode_step_per_seq_s=0.0, max_batch=8, kv_tokens=100_000,
                    max_model_len=10_000)
    settings.update(sim)
    model = ModelConfig(name="sim-model", source="none", engine="simulated",
                        simulated=SimulatedEngineConfig(**settings),
                        limits=Limits(max_output_tokens=64, default_output_tokens=16))
    return SimulatedEngine(model)


@pytest.fixture
async def engine_factory():
    engines: list[SimulatedEngine] = []

    async def factory(**sim: object) -> SimulatedEngine:
        engine = make_engine(**sim)
        await engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.shutdown()


def chat(request_id: str = "r1", *, max_tokens: int | None = 5, stream: bool = False,
         hint: int = 0, content: str = "Hello there", **extra: object) -> EngineRequest:
    body: dict = {"model": "sim-model", "messages": [{"role": "user", "content": content}],
                  "stream": stream, **extra}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return EngineRequest("chat", body, request_id, prompt_tokens_hint=hint)


def completion(request_id: str = "r1", *, max_tokens: int = 5, stream: bool = False,
               prompt: object = "Once upon a time", **extra: object) -> EngineRequest:
    body = {"model": "sim-model", "prompt": prompt, "max_tokens": max_tokens, "stream": stream,
            **extra}
    return EngineRequest("completion", body, request_id)


async def read_all(reply: Reply) -> list[bytes]:
    """The body's frames, without a stream's trailing usage count (see the usage test)."""
    return [chunk async for chunk in reply.body if isinstance(chunk, bytes)]


def sse_events(frames: list[bytes]) -> list[str]:
    """The `data:` payloads, checking every frame is exactly one SSE event."""
    events = []
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n"), frame
        assert frame.count(b"\n\n") == 1, frame
        events.append(frame[len(b"data: "):-2].decode())
    return events


def expected_text(tokens: int) -> str:
    return "".join(WORDS[i % len(WORDS)] for i in range(tokens))


# ------------------------------------------------------------------ wire format


async def test_non_stream_chat_returns_max_tokens_and_usage(engine_factory):
    engine = await engine_factory()
    reply = await engine.handle(chat("abc", max_tokens=7, content="x" * 40))
    assert reply.head.status == 200 and reply.head.stream is False
    frames = await read_all(reply)
    assert len(frames) == 1
    doc = json.loads(frames[0])
    assert doc["id"] == "chatcmpl-abc"
    assert doc["object"] == "chat.completion"
    assert doc["model"] == "sim-model"
    assert isinstance(doc["created"], int)
    (choice,) = doc["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == expected_text(7)
    assert choice["finish_reason"] == "length"
    prompt_tokens = math.ceil(40 / 4) + 4  # chars / 4 rounded up, plus 4 per message
    assert doc["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 7,
                            "total_tokens": prompt_tokens + 7,
                            "prompt_tokens_details": None, "completion_tokens_details": None}
    # The document carries the fields vLLM 0.32's server dumps, in its order.
    assert list(doc) == ["id", "object", "created", "model", "choices", "service_tier",
                         "system_fingerprint", "usage", "prompt_logprobs", "prompt_token_ids",
                         "prompt_text", "kv_transfer_params", "ec_transfer_params", "metrics"]
    # Compact JSON, like the other engine's wire output.
    assert b": " not in frames[0] and b", " not in frames[0].replace(b'", "', b"")


async def test_max_tokens_defaults_and_hint_is_used(engine_factory):
    engine = await engine_factory()
    doc = json.loads((await read_all(await engine.handle(chat(max_tokens=None, hint=123))))[0])
    assert doc["usage"]["completion_tokens"] == 16  # limits.output_tokens_when_unset
    assert doc["usage"]["prompt_tokens"] == 123  # the router's hint wins when positive
    body = {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 3,
            "max_tokens": 9}
    doc = json.loads((await read_all(await engine.handle(EngineRequest("chat", body, "x"))))[0])
    assert doc["usage"]["completion_tokens"] == 3  # max_completion_tokens first, as vLLM


async def test_non_stream_completion(engine_factory):
    engine = await engine_factory()
    reply = await engine.handle(completion("c1", max_tokens=4, prompt="y" * 9))
    doc = json.loads((await read_all(reply))[0])
    assert doc["id"] == "cmpl-c1" and doc["object"] == "text_completion"
    (choice,) = doc["choices"]
    assert choice["text"] == expected_text(4) and choice["finish_reason"] == "length"
    assert doc["usage"]["prompt_tokens"] == 3 and doc["usage"]["completion_tokens"] == 4
    tokens = await engine.handle(completion(max_tokens=2, prompt=[1, 2, 3, 4, 5]))
    assert json.loads((await read_all(tokens))[0])["usage"]["prompt_tokens"] == 5


async def test_chat_stream_frames(engine_factory):
    engine = await engine_factory()
    reply = await engine.handle(chat("s1", max_tokens=5, stream=True,
                                     stream_options={"include_usage": True}))
    assert reply.head.status == 200 and reply.head.stream is True
    events = sse_events(await read_all(reply))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks:
        assert chunk["id"] == "chatcmpl-s1"
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "sim-model"
        assert chunk["created"] == chunks[0]["created"]
    first, *tokens, usage = chunks
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": None, "finish_reason": None}]
    assert len(tokens) == 5  # one chunk per token
    assert "".join(t["choices"][0]["delta"]["content"] for t in tokens) == expected_text(5)
    assert [t["choices"][0]["finish_reason"] for t in tokens] == [None] * 4 + ["length"]
    # Exactly vLLM's chunk shapes (exclude_unset): the finishing one adds stop_reason.
    assert tokens[0]["choices"][0] == {"index": 0, "delta": {"content": WORDS[0]},
                                       "logprobs": None, "finish_reason": None, "token_ids": None}
    assert tokens[-1]["choices"][0] == {"index": 0, "delta": {"content": WORDS[4]},
                                        "logprobs": None, "finish_reason": "length",
                                        "stop_reason": None, "token_ids": None}
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 5


async def test_stream_without_usage_ends_with_finish_chunk(engine_factory):
    engine = await engine_factory()
    events = sse_events(await read_all(await engine.handle(chat(max_tokens=3, stream=True))))
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in json.loads(event) for event in events[:-1])
    assert len(events) == 1 + 3 + 1  # role, tokens, [DONE]


@pytest.mark.parametrize("options", [{}, {"stream_options": {"include_usage": True}}],
                         ids=["usage-not-asked", "usage-asked"])
async def test_a_stream_ends_with_the_usage_it_counted_whether_or_not_the_client_asked(engine_factory, options):
    engine = await engine_factory()
    items = [item async for item in (await engine.handle(chat(max_tokens=3, stream=True, hint=20, **options))).body]
    assert items[-2:] == [b"data: [DONE]\n\n", Usage(20, 3)]
    assert all(isinstance(item, bytes) for item in items[:-1])


async def test_completion_stream_frames(engine_factory):
    engine = await engine_factory()
    reply = await engine.handle(completion("c2", max_tokens=3, stream=True,
                                           stream_options={"include_usage": True}))
    events = sse_events(await read_all(reply))
    assert events[-1] == "[DONE]"
    *tokens, usage = [json.loads(event) for event in events[:-1]]
    assert len(tokens) == 3  # no role chunk for completions
    for chunk in tokens:
        assert chunk["id"] == "cmpl-c2" and chunk["object"] == "text_completion"
    assert tokens[0]["choices"][0] == {"index": 0, "text": WORDS[0], "logprobs": None,
                                       "finish_reason": None, "stop_reason": None,
                                       "prompt_token_ids": None, "token_ids": None}
    assert tokens[-1]["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3


# --------------------------------------------------------------------- refusals


def assert_openai_error(reply: Reply, frames: list[bytes], param: str | None) -> dict:
    assert reply.head.status == 400 and reply.head.stream is False
    assert len(frames) == 1
    doc = json.loads(frames[0])
    assert set(doc) == {"error"}
    error = doc["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    return error


async def test_over_long_prompt_is_refused(engine_factory):
    engine = await engine_factory(max_model_len=1000)
    reply = await engine.handle(chat(max_tokens=10, stream=True, hint=1000))
    error = assert_openai_error(reply, await read_all(reply), "messages")
    assert "maximum context length is 1000 tokens" in error["message"]
    assert error["code"] == "context_length_exceeded"
    reply = await engine.handle(completion(max_tokens=10, prompt="z" * 4000))
    assert_openai_error(reply, await read_all(reply), "prompt")
    assert engine.stats().running == engine.stats().waiting == 0


async def test_output_is_shortened_to_fit_the_context_like_vllm(engine_factory):
    engine = await engine_factory(max_model_len=1000)
    reply = await engine.handle(chat(max_tokens=10, hint=995))
    assert reply.head.status == 200
    doc = json.loads((await read_all(reply))[0])
    assert doc["usage"]["completion_tokens"] == 5


async def test_request_larger_than_kv_cache_is_refused(engine_factory):
    engine = await engine_factory(kv_tokens=50, max_model_len=1000)
    reply = await engine.handle(chat(max_tokens=10, hint=41))
    error = assert_openai_error(reply, await read_all(reply), "messages")
    assert "KV cache" in error["message"]


async def test_n_greater_than_one_is_refused(engine_factory):
    engine = await engine_factory()
    reply = await engine.handle(chat(n=2))
    error = assert_openai_error(reply, await read_all(reply), "n")
    assert "n must be 1" in error["message"]
    assert (await engine.handle(chat(n=1))).head.status == 200


# ----------------------------------------------------------------------- timing


async def first_content_time(reply: Reply) -> float:
    async for frame in reply.body:
        if b'"content":""' not in frame:  # skip the role chunk
            return time.perf_counter()
    raise AssertionError("no content")


async def test_ttft_is_prefill_plus_one_decode_step(engine_factory):
    sim = dict(prefill_tokens_per_s=2000.0, decode_step_base_s=0.05)
    engine = await engine_factory(**sim)
    prompt_tokens = 200
    expected = prompt_tokens / sim["prefill_tokens_per_s"] + sim["decode_step_base_s"]  # 0.15 s
    start = time.perf_counter()
    reply = await engine.handle(chat(max_tokens=3, stream=True, hint=prompt_tokens))
    ttft = await first_content_time(reply) - start
    assert expected * 0.97 <= ttft <= expected + SLACK_S
    await reply.body.aclose()


async def test_decode_steps_follow_the_formula(engine_factory):
    sim = dict(decode_step_base_s=0.01, decode_step_per_seq_s=0.005, max_batch=4)
    engine = await engine_factory(**sim)
    tokens = 20
    start = time.perf_counter()
    await asyncio.gather(*(engine.handle(chat(str(i), max_tokens=tokens)) for i in range(4)))
    elapsed = time.perf_counter() - start
    step = sim["decode_step_base_s"] + sim["decode_step_per_seq_s"] * 3  # 0.025 s
    expected = tokens * step  # 0.5 s; prefill is negligible here
    assert expected * 0.97 <= elapsed <= expected + SLACK_S


async def test_throughput_saturates_at_max_batch(engine_factory):
    sim = dict(decode_step_base_s=0.02, max_batch=4)
    engine = await engine_factory(**sim)
    tokens = 10
    seen = {"running": 0, "waiting": 0}

    async def sample() -> None:
        while True:
            stats = engine.stats()
            seen["running"] = max(seen["running"], stats.running)
            seen["waiting"] = max(seen["waiting"], stats.waiting)
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    start = time.perf_counter()
    replies = await asyncio.gather(*(engine.handle(chat(str(i), max_tokens=tokens))
                                     for i in range(2 * sim["max_batch"])))
    elapsed = time.perf_counter() - start
    sampler.cancel()
    assert all(reply.head.status == 200 for reply in replies)
    assert seen["running"] == sim["max_batch"]  # never more than max_batch decode together
    assert seen["waiting"] >= sim["max_batch"]  # the other half waited
    one_round = tokens * sim["decode_step_base_s"]
    assert 2 * one_round * 0.97 <= elapsed <= 2 * one_round + SLACK_S
    stats = engine.stats()
    assert stats.running == stats.waiting == 0 and stats.kv_usage == 0.0


async def test_kv_capacity_limits_concurrency_below_max_batch(engine_factory):
    sim = dict(decode_step_base_s=0.02, max_batch=8, kv_tokens=100, max_model_len=100)
    engine = await engine_factory(**sim)
    tokens, prompt = 10, 30  # 40 KV tokens each: two fit in 100
    seen = {"running": 0, "kv": 0.0}

    async def sample() -> None:
        while True:
            stats = engine.stats()
            seen["running"] = max(seen["running"], stats.running)
            seen["kv"] = max(seen["kv"], stats.kv_usage)
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    start = time.perf_counter()
    await asyncio.gather(*(engine.handle(chat(str(i), max_tokens=tokens, hint=prompt))
                           for i in range(4)))
    elapsed = time.perf_counter() - start
    sampler.cancel()
    assert seen["running"] == 2
    assert seen["kv"] == pytest.approx(0.8)
    one_round = tokens * sim["decode_step_base_s"]
    assert 2 * one_round * 0.97 <= elapsed <= 2 * one_round + SLACK_S
    assert engine.stats().kv_usage == 0.0


async def test_waiting_requests_start_by_priority_then_arrival(engine_factory):
    engine = await engine_factory(decode_step_base_s=0.01, max_batch=1)
    finished: list[str] = []

    async def run(request_id: str, priority: int) -> None:
        await read_all(await engine.handle(
            EngineRequest("chat", chat(request_id).body, request_id, priority=priority)))
        finished.append(request_id)

    busy = asyncio.create_task(run("running", 0))
    await asyncio.sleep(0.005)  # it holds the only slot; the rest queue in this order
    queued = [asyncio.create_task(run(name, priority))
              for name, priority in [("late-1", 1), ("early-0", 0), ("late-2", 1), ("next-0", 0)]]
    await asyncio.gather(busy, *queued)
    assert finished == ["running", "early-0", "next-0", "late-1", "late-2"]


async def test_stats_report_capacity(engine_factory):
    engine = await engine_factory(max_batch=3, kv_tokens=5000, max_model_len=2000)
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.kv_usage) == (0, 0, 0.0)
    assert (stats.kv_capacity_tokens, stats.max_num_seqs, stats.max_model_len) == (5000, 3, 2000)


async def test_startup_takes_startup_s():
    engine = make_engine(startup_s=0.1)
    start = time.perf_counter()
    await engine.start()
    assert time.perf_counter() - start >= 0.1 * 0.97
    await engine.check_health()
    await engine.shutdown()


# ------------------------------------------------------------------ early close


async def test_closing_a_stream_early_frees_its_kv(engine_factory):
    engine = await engine_factory(kv_tokens=10_000)
    reply = await engine.handle(chat(max_tokens=1000, stream=True, hint=100))
    frames = []
    async for frame in reply.body:
        frames.append(frame)
        if len(frames) == 3:
            break
    stats = engine.stats()
    assert stats.running == 1 and stats.kv_usage == pytest.approx(1100 / 10_000)
    await reply.body.aclose()
    stats = engine.stats()
    assert stats.running == 0 and stats.waiting == 0 and stats.kv_usage == 0.0
    assert [frame async for frame in reply.body] == []  # a closed body stays closed


async def test_cancelling_the_consumer_aborts_the_sequence(engine_factory):
    engine = await engine_factory()
    reply = await engine.handle(chat(max_tokens=1000, stream=True))

    async def consume() -> None:
        async for _ in reply.body:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    assert engine.stats().running == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = engine.stats()
    assert stats.running == 0 and stats.kv_usage == 0.0


async def test_closing_a_waiting_stream_leaves_the_queue(engine_factory):
    engine = await engine_factory(max_batch=1)
    first = await engine.handle(chat("a", max_tokens=1000, stream=True))
    second = await engine.handle(chat("b", max_tokens=1000, stream=True))
    await asyncio.sleep(0.03)
    assert (engine.stats().running, engine.stats().waiting) == (1, 1)
    await second.body.aclose()  # never iterated: still aborted
    assert (engine.stats().running, engine.stats().waiting) == (1, 0)
    await first.body.aclose()
    await asyncio.sleep(0.02)
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.kv_usage) == (0, 0, 0.0)


async def test_dropping_an_unread_stream_aborts_it(engine_factory):
    engine = await engine_factory(max_batch=1)
    first = await engine.handle(chat("a", max_tokens=1000, stream=True))
    second = await engine.handle(chat("b", max_tokens=1000, stream=True))
    await asyncio.sleep(0.03)
    assert (engine.stats().running, engine.stats().waiting) == (1, 1)
    del first, second  # the router lost both bodies without closing them
    gc.collect()
    await asyncio.sleep(0.02)
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.kv_usage) == (0, 0, 0.0)


async def test_cancelled_non_stream_request_is_aborted(engine_factory):
    engine = await engine_factory()
    task = asyncio.create_task(engine.handle(chat(max_tokens=1000)))
    await asyncio.sleep(0.03)
    assert engine.stats().running == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats().running == 0 and engine.stats().kv_usage == 0.0


async def test_engine_goes_idle_and_serves_again(engine_factory):
    engine = await engine_factory()
    await read_all(await engine.handle(chat(max_tokens=2)))
    await asyncio.sleep(0.05)  # idle: the scheduler waits on its event
    start = time.perf_counter()
    await read_all(await engine.handle(chat(max_tokens=2)))
    # The step clock restarts after idling: no catch-up burst, no extra delay.
    assert 2 * 0.005 * 0.97 <= time.perf_counter() - start <= 2 * 0.005 + SLACK_S


# --------------------------------------------------------------------- shutdown


async def test_shutdown_ends_open_streams_with_an_error_event(engine_factory):
    engine = await engine_factory(max_batch=1)
    running = await engine.handle(chat("a", max_tokens=1000, stream=True))
    queued = await engine.handle(chat("b", max_tokens=1000, stream=True))
    non_stream = asyncio.create_task(engine.handle(chat("c", max_tokens=1000)))
    frames = [await running.body.__anext__(), await running.body.__anext__()]
    await engine.shutdown()

    for reply, already in ((running, frames), (queued, [])):
        events = sse_events(already + await asyncio.wait_for(read_all(reply), 1.0))
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["type"] == "service_unavailable_error" and error["message"]
        assert set(error) == {"message", "type", "param", "code"}

    reply = await asyncio.wait_for(non_stream, 1.0)  # non-stream waiters get a 503 reply
    assert reply.head.status == 503
    assert json.loads((await read_all(reply))[0])["error"]["type"] == "service_unavailable_error"

    late = await engine.handle(chat())
    assert late.head.status == 503
    with pytest.raises(EngineDead):
        await engine.check_health()
    stats = engine.stats()
    assert (stats.running, stats.waiting, stats.kv_usage) == (0, 0, 0.0)


async def test_dead_scheduler_is_reported(engine_factory, monkeypatch):
    engine = await engine_factory()
    await engine.check_health()
    reply = await engine.handle(chat(max_tokens=1000, stream=True))

    def broken() -> None:
        raise RuntimeError("simulated GPU fault")

    monkeypatch.setattr(engine, "_advance", broken)
    events = sse_events(await asyncio.wait_for(read_all(reply), 1.0))
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "server_error"
    with pytest.raises(EngineDead):
        await engine.check_health()
    with pytest.raises(EngineDead):
        await engine.handle(chat())
