"""Statistics of a run: percentiles, TPOT, throughput, goodput and failures."""

import pytest

from bench.client import RequestResult
from bench.stats import Slo, meets, percentile, percentiles, summarise, tpot_s


def streamed(ttft: float, e2e: float, tokens: int, itl: list[float] | None = None) -> RequestResult:
    return RequestResult(stream=True, status=200, ttft_s=ttft, e2e_s=e2e, output_tokens=tokens,
                         input_tokens=10, itl_s=itl or [])


def refused(status: int, retry_after: str | None = None) -> RequestResult:
    return RequestResult(stream=True, status=status, e2e_s=0.01, failure=str(status),
                         retry_after=retry_after)


class TestPercentile:
    def test_interpolates_linearly_between_ranks(self):
        values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        assert percentile(values, 50) == pytest.approx(5.5)
        assert percentile(values, 90) == pytest.approx(9.1)
        assert percentile(values, 99) == pytest.approx(9.91)

    def test_ends_are_min_and_max_and_order_does_not_matter(self):
        assert percentile([3, 1, 2], 0) == 1
        assert percentile([3, 1, 2], 100) == 3
        assert percentile([3, 1, 2], 50) == 2

    def test_a_single_value_is_every_percentile(self):
        assert percentile([4.2], 99) == 4.2

    def test_is_none_for_no_values(self):
        assert percentile([], 50) is None
        empty = percentiles([])
        assert (empty.count, empty.p50, empty.p99, empty.mean) == (0, None, None, None)

    def test_matches_numpy_linear_method(self):
        numpy = pytest.importorskip("numpy")
        values = [0.3, 0.01, 7.5, 2.2, 2.2, 9.0, 0.7]
        for q in (50, 90, 99):
            assert percentile(values, q) == pytest.approx(float(numpy.percentile(values, q)))


class TestTimePerOutputToken:
    def test_is_decode_time_over_tokens_after_the_first(self):
        assert tpot_s(streamed(ttft=0.1, e2e=1.1, tokens=11)) == pytest.approx(0.1)

    def test_is_undefined_with_one_token_or_without_streaming(self):
        assert tpot_s(streamed(ttft=0.1, e2e=0.1, tokens=1)) is None
        plain = RequestResult(stream=False, status=200, e2e_s=1.0, output_tokens=10)
        assert tpot_s(plain) is None


class TestSummary:
    def test_rates_are_over_the_measured_wall_time(self):
        results = [streamed(0.1, 1.1, 11), streamed(0.2, 2.2, 21)]
        summary = summarise(results, wall_s=4.0)
        assert summary.output_tokens == 32
        assert summary.output_tokens_per_s == pytest.approx(8.0)
        assert summary.requests_per_s == pytest.approx(0.5)

    def test_latency_distributions(self):
        results = [streamed(0.1, 1.1, 11, itl=[0.1] * 10), streamed(0.3, 2.3, 21, itl=[0.1] * 20)]
        summary = summarise(results, wall_s=3.0)
        assert summary.ttft_s.p50 == pytest.approx(0.2)
        assert summary.ttft_s.count == 2
        assert summary.tpot_s.p50 == pytest.approx(0.1)
        assert summary.itl_s.count == 30
        assert summary.e2e_s.p50 == pytest.approx(1.7)

    def test_failures_are_counted_by_status_and_excluded_from_latency(self):
        results = [streamed(0.1, 1.1, 11), refused(503, "7"), refused(503, "7"), refused(429, "1")]
        summary = summarise(results, wall_s=1.0)
        assert (summary.requests, summary.succeeded, summary.failed) == (4, 1, 3)
        assert summary.failures == {"503": 2, "429": 1}
        assert summary.retry_after == {"7": 2, "1": 1}
        assert summary.ttft_s.count == 1
        assert summary.requests_per_s == pytest.approx(1.0)

    def test_nothing_succeeded_leaves_latencies_undefined(self):
        summary = summarise([refused(503)], wall_s=1.0)
        assert summary.ttft_s.p50 is None
        assert summary.output_tokens_per_s == 0
        assert summary.goodput_rps == 0

    def test_zero_wall_time_gives_zero_rates_not_an_error(self):
        assert summarise([], wall_s=0.0).requests_per_s == 0


class TestGoodput:
    def test_counts_requests_meeting_both_slos(self):
        fast = streamed(ttft=0.1, e2e=1.1, tokens=11)   # TPOT 0.1
        slow_start = streamed(ttft=0.6, e2e=1.6, tokens=11)
        slow_decode = streamed(ttft=0.1, e2e=3.1, tokens=11)   # TPOT 0.3
        slo = Slo(ttft_s=0.5, tpot_s=0.2)
        summary = summarise([fast, slow_start, slow_decode, refused(503)], wall_s=2.0, slo=slo)
        assert summary.goodput_rps == pytest.approx(0.5)
        assert summary.requests_per_s == pytest.approx(1.5)

    def test_without_slos_equals_successful_requests_per_second(self):
        summary = summarise([streamed(9, 99, 5), refused(503)], wall_s=2.0)
        assert summary.goodput_rps == summary.requests_per_s == pytest.approx(0.5)

    def test_failed_requests_never_meet_an_slo(self):
        assert not meets(refused(429), Slo())

    def test_without_streaming_the_whole_answer_is_the_first_token(self):
        plain = RequestResult(stream=False, status=200, e2e_s=0.8, output_tokens=10)
        assert meets(plain, Slo(ttft_s=1.0))
        assert not meets(plain, Slo(ttft_s=0.5))

    def test_slo_boundaries_are_inclusive(self):
        exact = streamed(ttft=0.5, e2e=0.5 + 0.2 * 10, tokens=11)
        assert meets(exact, Slo(ttft_s=0.5, tpot_s=0.2 + 1e-12))
