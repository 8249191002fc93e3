"""The result schema round-trips through JSON; the report tables say what was measured."""

from pathlib import Path

import pytest

from bench.arrivals import ClosedLoop, OpenLoop
from bench.client import RequestResult
from bench.cpu import split
from bench.markdown import cold_start_table, failures_text, report, runs_table
from bench.plots import plot
from bench.results import Load, RunResult, SuiteResult, SystemResult
from bench.stats import Slo, summarise


def run(system: str, load, repeat: int = 0, ttft: float = 0.1, tokens: int = 11,
        wall: float = 1.0, refusals: int = 0) -> RunResult:
    results = [RequestResult(stream=True, status=200, ttft_s=ttft, e2e_s=ttft + 1.0,
                             output_tokens=tokens, input_tokens=5) for _ in range(10)]
    results += [RequestResult(stream=True, status=503, failure="503", retry_after="2")] * refusals
    summary = summarise(results, wall, Slo(ttft_s=0.5))
    cpu = split({"api": 0.11, "VLLM::EngineCore": 2.0})
    return RunResult(system=system, load=Load.of(load), repeat=repeat, stream=True,
                     summary=summary, cpu=cpu, frontend_cpu_ms_per_token=1000 * 0.11 / summary.output_tokens)


@pytest.fixture
def suite() -> SuiteResult:
    c1, c64 = ClosedLoop(1), ClosedLoop(64)
    runs = [
        run("vllm", c1, 0, ttft=0.10), run("vllm", c64, 0, ttft=0.40, wall=0.5),
        run("app", c1, 0, ttft=0.12), run("app", c64, 0, ttft=0.60, wall=0.5, refusals=3),
        run("vllm", c1, 1, ttft=0.10), run("vllm", c64, 1, ttft=0.40, wall=0.5),
        run("app", c1, 1, ttft=0.14), run("app", c64, 1, ttft=0.80, wall=1.0),
    ]
    systems = [SystemResult(name="vllm", ready_s=[20, 22], cold_start_s=[21, 23]),
               SystemResult(name="app", ready_s=[40, 44], cold_start_s=[45, 47])]
    return SuiteResult(created="2026-01-01 00:00:00", model="tiny", baseline="vllm",
                       settings={"requests": 10}, systems=systems, runs=runs)


def rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]


class TestJson:
    def test_a_suite_round_trips_through_json(self, suite: SuiteResult, tmp_path: Path):
        suite.save(tmp_path / "results.json")
        assert SuiteResult.load(tmp_path / "results.json") == suite

    def test_load_points_round_trip_to_the_same_schedule(self):
        for point in (ClosedLoop(8), OpenLoop(3.0, "gamma", 0.25, 4), OpenLoop(1.5)):
            assert Load.model_validate_json(Load.of(point).model_dump_json()).point() == point

    def test_undefined_percentiles_are_null_not_nan(self, tmp_path: Path):
        empty = SuiteResult(created="now", model="m", runs=[
            RunResult(system="s", load=Load.of(ClosedLoop(1)), repeat=0, stream=True,
                      summary=summarise([], 1.0))])
        empty.save(tmp_path / "r.json")
        text = (tmp_path / "r.json").read_text()
        assert "NaN" not in text and '"p50": null' in text


class TestRunsTable:
    def test_one_row_per_system_and_load_point_by_load_then_system(self, suite: SuiteResult):
        table = rows(runs_table(suite))
        assert [row[:3] for row in table[2:]] == [
            ["vllm", "c=1", "2"], ["app", "c=1", "2"], ["vllm", "c=64", "2"], ["app", "c=64", "2"]]

    def test_latencies_are_medians_over_repeats_in_milliseconds(self, suite: SuiteResult):
        header, _, *body = rows(runs_table(suite))
        app_c64 = dict(zip(header, body[3]))
        assert app_c64["TTFT p50 ms"] == "700.0"
        assert app_c64["out tok/s"] == "165.0"  # median of 220 and 110

    def test_ratios_compare_with_the_baseline_at_the_same_load(self, suite: SuiteResult):
        header, _, *body = rows(runs_table(suite))
        assert "TTFT p50 ÷ vllm" in header
        vllm_c1, app_c1 = dict(zip(header, body[0])), dict(zip(header, body[1]))
        assert vllm_c1["TTFT p50 ÷ vllm"] == "1.00×"
        assert app_c1["TTFT p50 ÷ vllm"] == "1.30×"
        assert dict(zip(header, body[3]))["tok/s ÷ vllm"] == "0.75×"  # 165 / 220

    def test_failures_are_shown_never_hidden(self, suite: SuiteResult):
        header, _, *body = rows(runs_table(suite))
        assert dict(zip(header, body[3]))["failures"] == "503×3"
        assert dict(zip(header, body[0]))["failures"] == "0"

    def test_without_a_baseline_there_are_no_ratio_columns(self, suite: SuiteResult):
        suite.baseline = None
        assert "÷" not in runs_table(suite)
        assert "÷ app" in runs_table(suite, baseline="app")

    def test_front_end_cpu_per_token(self, suite: SuiteResult):
        header, _, *body = rows(runs_table(suite))
        assert dict(zip(header, body[0]))["FE CPU ms/tok"] == "1.000"


def test_failures_text_adds_up_repeats_by_kind():
    a = run("s", ClosedLoop(1), refusals=2)
    b = run("s", ClosedLoop(1))
    b.summary.failures = {"timeout": 1, "503": 1}
    assert failures_text([a, b]) == "503×3, timeout×1"


def test_cold_start_table_has_medians_and_counts_failed_launches(suite: SuiteResult):
    suite.system("app").errors.append("app: exited with 1 before model listed")
    table = rows(cold_start_table(suite))
    assert table[2] == ["vllm", "2", "0", "21.0", "22.0"]
    assert table[3] == ["app", "3", "1", "42.0", "46.0"]
    assert "- app: exited with 1" in report(suite)


def test_the_report_has_both_tables(suite: SuiteResult):
    text = report(suite)
    assert "## Load points" in text and "## Cold start" in text and "`tiny`" in text


def test_plots_are_written_as_png(suite: SuiteResult, tmp_path: Path):
    suite.runs.append(run("vllm", OpenLoop(2.0)))
    paths = plot(suite, tmp_path)
    assert [p.name for p in paths] == ["latency.png", "throughput.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
