"""The load generator against a small in-process OpenAI-compatible server."""

import time

import pytest
from bench_fake_openai import FIRST_TOKEN_DELAY_S, PROMPT_TOKENS, TOKEN_DELAY_S, serve_in_thread

from bench.__main__ import main
from bench.arrivals import ClosedLoop, OpenLoop
from bench.client import Endpoint, make_client, run_load, send, timed_metric
from bench.launcher import free_port
from bench.measure import measure
from bench.stats import summarise
from bench.workload import chat_body, fixed_lengths


@pytest.fixture(scope="module")
def url():
    with serve_in_thread() as base_url:
        yield base_url


def body(model: str, tokens: int = 6, stream: bool = True) -> dict:
    return chat_body(model, [{"role": "user", "content": "hello"}], tokens, stream)


async def one(url: str, request: dict, timeout_s: float = 10.0):
    endpoint = Endpoint(url, timeout_s=timeout_s)
    async with make_client(endpoint) as client:
        return await send(client, endpoint, request)


class TestStreaming:
    async def test_records_first_token_gaps_and_usage(self, url):
        result = await one(url, body("tiny", tokens=6))
        assert result.ok and result.status == 200
        assert result.output_tokens == 6
        assert result.input_tokens == PROMPT_TOKENS
        assert result.ttft_s >= FIRST_TOKEN_DELAY_S * 0.9
        assert len(result.itl_s) == 5  # held-back tokens ("" content) count as arrivals
        assert all(gap >= TOKEN_DELAY_S * 0.5 for gap in result.itl_s)
        assert result.e2e_s >= result.ttft_s + sum(result.itl_s) * 0.99

    async def test_counts_output_chunks_when_the_server_sends_no_usage(self, url):
        result = await one(url, body("no-usage", tokens=7))
        assert result.ok and result.output_tokens == 7 and result.input_tokens is None

    async def test_the_answer_ends_at_done_even_if_the_server_keeps_the_response_open(self, url):
        started = time.monotonic()
        result = await one(url, body("lingers", tokens=3))
        assert result.ok and result.output_tokens == 3
        assert result.e2e_s < 1.0
        assert time.monotonic() - started < 3.0

    async def test_an_error_event_mid_stream_is_a_failure(self, url):
        result = await one(url, body("broken"))
        assert (result.failure, result.error, result.status) == ("stream-error", "engine died", 200)


class TestWithoutStreaming:
    async def test_records_end_to_end_latency_and_usage(self, url):
        result = await one(url, body("tiny", tokens=4, stream=False))
        assert result.ok and result.ttft_s is None and result.itl_s == []
        assert result.output_tokens == 4
        assert result.e2e_s >= FIRST_TOKEN_DELAY_S + 3 * TOKEN_DELAY_S * 0.9


class TestFailures:
    @pytest.mark.parametrize("stream", [True, False])
    async def test_overload_is_counted_with_status_body_and_retry_after(self, url, stream):
        result = await one(url, body("overloaded", stream=stream))
        assert (result.ok, result.status, result.failure) == (False, 503, "503")
        assert result.retry_after == "7"
        assert "try later" in result.error

    async def test_rate_limits_are_counted_too(self, url):
        result = await one(url, body("limited"))
        assert (result.failure, result.retry_after) == ("429", "1")

    async def test_a_request_never_outlives_its_timeout(self, url):
        started = time.monotonic()
        result = await one(url, body("slow"), timeout_s=0.3)
        assert result.failure == "timeout" and result.status == 0
        assert time.monotonic() - started < 3

    async def test_an_answer_that_is_not_json_is_a_failure_not_a_crash(self, url):
        result = await one(url, body("garbage", stream=False))
        assert (result.status, result.failure) == (200, "bad-response")

    async def test_an_unreachable_server_is_a_connection_failure(self):
        result = await one(f"http://127.0.0.1:{free_port()}", body("tiny"))
        assert result.failure == "connection" and result.status == 0


class TestLoads:
    async def test_closed_loop_sends_every_request_and_summarises(self, url):
        endpoint = Endpoint(url)
        specs = fixed_lengths("tiny", 6, input_tokens=5, output_tokens=4, stream=True)
        async with make_client(endpoint) as client:
            run = await run_load(client, endpoint, specs, ClosedLoop(3))
        summary = summarise(run.results, run.wall_s)
        assert (summary.requests, summary.succeeded, summary.output_tokens) == (6, 6, 24)
        assert summary.tpot_s.p50 == pytest.approx(TOKEN_DELAY_S, rel=0.5)
        # Three workers, two rounds: about twice one request's time, not six times.
        one_request = FIRST_TOKEN_DELAY_S + 3 * TOKEN_DELAY_S
        assert run.wall_s < 4 * one_request

    async def test_open_loop_sends_on_schedule_whatever_the_answers(self, url):
        endpoint = Endpoint(url)
        load = OpenLoop(rate=40.0, arrival="poisson", seed=1)
        specs = fixed_lengths("tiny", 5, 5, 2, True)
        async with make_client(endpoint) as client:
            run = await run_load(client, endpoint, specs, load)
        for result, offset in zip(run.results, load.offsets(5)):
            assert offset - 0.001 <= result.start_s <= offset + 0.05

    async def test_refusals_and_successes_in_one_run_are_both_counted(self, url):
        specs = fixed_lengths("tiny", 4, 5, 3, True) + fixed_lengths("overloaded", 3, 5, 3, True)
        measured = await measure(Endpoint(url), specs, ClosedLoop(4), cpu_pids=[])
        assert measured.summary.succeeded == 4
        assert measured.summary.failures == {"503": 3}
        assert measured.summary.retry_after == {"7": 3}
        assert measured.cpu is None


def test_endpoint_urls_and_auth_headers():
    endpoint = Endpoint("http://h:1/v1/", api_key="k", headers={"X-Tenant": "t"})
    assert endpoint.url("chat/completions") == "http://h:1/v1/chat/completions"
    assert Endpoint("http://h:1").url("/models") == "http://h:1/v1/models"
    assert endpoint.all_headers() == {"X-Tenant": "t", "Authorization": "Bearer k"}
    assert "Authorization" not in Endpoint("http://h:1").all_headers()


def test_the_load_command_prints_a_table(url, capsys, tmp_path):
    main(["load", "--url", url, "--model", "tiny", "--concurrency", "2", "--requests", "4",
          "--output-tokens", "3", "--warmup", "0", "--slo-ttft-ms", "5000", "--out", str(tmp_path)])
    table = capsys.readouterr().out
    assert "| c=2 |" in table
    assert (tmp_path / "results.json").exists() and (tmp_path / "latency.png").exists()
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) == 4


@pytest.mark.parametrize(("header", "seconds"), [
    ("admission;dur=0.31, router;dur=0.52", 0.00052),
    ('router;desc="to the head";dur=12', 0.012),
    ("admission;dur=0.31", None),
    ("router", None),
    ("router;dur=soon", None),
    (None, None),
])
def test_the_router_time_is_read_from_server_timing(header, seconds):
    found = timed_metric(header, "router")
    if seconds is None:
        assert found is None
    else:
        assert found == pytest.approx(seconds)
