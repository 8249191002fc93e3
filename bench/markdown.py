"""Markdown tables of a suite: one row per system and load point, repeats combined by median."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import median

from bench.results import RunResult, SuiteResult

Metric = Callable[[RunResult], float | None]

# (header, metric, unit scale, digits); latencies are stored in seconds, shown in ms.
COLUMNS: list[tuple[str, Metric, float, int]] = [
    ("req/s", lambda r: r.summary.requests_per_s, 1, 2),
    ("out tok/s", lambda r: r.summary.output_tokens_per_s, 1, 1),
    ("goodput req/s", lambda r: r.summary.goodput_rps, 1, 2),
    ("TTFT p50 ms", lambda r: r.summary.ttft_s.p50, 1000, 1),
    ("TTFT p99 ms", lambda r: r.summary.ttft_s.p99, 1000, 1),
    ("TPOT p50 ms", lambda r: r.summary.tpot_s.p50, 1000, 2),
    ("TPOT p99 ms", lambda r: r.summary.tpot_s.p99, 1000, 2),
    ("ITL p99 ms", lambda r: r.summary.itl_s.p99, 1000, 2),
    ("e2e p50 ms", lambda r: r.summary.e2e_s.p50, 1000, 1),
    ("FE CPU ms/tok", lambda r: r.frontend_cpu_ms_per_token, 1, 3),
]

# Ratios against the baseline at the same load point: >1 is more throughput, or slower.
RATIOS: list[tuple[str, Metric]] = [
    ("tok/s ÷ base", lambda r: r.summary.output_tokens_per_s),
    ("TTFT p50 ÷ base", lambda r: r.summary.ttft_s.p50),
    ("TTFT p99 ÷ base", lambda r: r.summary.ttft_s.p99),
    ("TPOT p50 ÷ base", lambda r: r.summary.tpot_s.p50),
]


def median_of(runs: Sequence[RunResult], metric: Metric) -> float | None:
    values = [value for value in map(metric, runs) if value is not None]
    return median(values) if values else None


def _number(value: float | None, scale: float = 1, digits: int = 2) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    return "–" if value is None or not base else f"{value / base:.2f}×"


def failures_text(runs: Sequence[RunResult]) -> str:
    """Failures of all repeats, e.g. "503×12, timeout×1"; "0" when none failed."""
    counts: dict[str, int] = {}
    for run in runs:
        for kind, count in run.summary.failures.items():
            counts[kind] = counts.get(kind, 0) + count
    return ", ".join(f"{kind}×{count}" for kind, count in sorted(counts.items())) or "0"


def _row(name: str, label: str, runs: list[RunResult], base: list[RunResult] | None) -> list[str]:
    cells = [name, label, str(len(runs))]
    cells += [_number(median_of(runs, metric), scale, digits) for _, metric, scale, digits in COLUMNS]
    if base is not None:
        cells += [_ratio(median_of(runs, metric), median_of(base, metric)) for _, metric in RATIOS]
    cells.append(failures_text(runs))
    return cells


def _order(suite: SuiteResult, label: str, system: str) -> tuple[int, int]:
    """Rows by load point as first run, then by system as first run."""
    labels = list(dict.fromkeys(run.load.label for run in suite.runs))
    systems = list(dict.fromkeys(run.system for run in suite.runs))
    return labels.index(label), systems.index(system)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def runs_table(suite: SuiteResult, baseline: str | None = None) -> str:
    """One row per system × load point; ratio columns when `baseline` names a system."""
    baseline = baseline or suite.baseline
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for run in suite.runs:
        groups.setdefault((run.load.label, run.system), []).append(run)
    groups = dict(sorted(groups.items(), key=lambda item: _order(suite, *item[0])))
    has_base = baseline is not None and any(system == baseline for _, system in groups)
    header = ["system", "load", "runs"] + [title for title, *_ in COLUMNS]
    if has_base:
        header += [title.replace("base", baseline) for title, _ in RATIOS]
    header.append("failures")
    rows = [_row(system, label, runs, groups.get((label, baseline)) if has_base else None)
            for (label, system), runs in groups.items()]
    return _table(header, rows)


def cold_start_table(suite: SuiteResult) -> str:
    header = ["system", "launches", "failed launches", "ready s (median)",
              "cold start s (median)"]
    rows = [[s.name, str(len(s.cold_start_s) + len(s.errors)), str(len(s.errors)),
             _number(median(s.ready_s) if s.ready_s else None, 1, 1),
             _number(median(s.cold_start_s) if s.cold_start_s else None, 1, 1)]
            for s in suite.systems]
    return _table(header, rows)


def launch_errors(suite: SuiteResult) -> list[str]:
    return [f"- {error}" for system in suite.systems for error in system.errors]


def report(suite: SuiteResult, baseline: str | None = None) -> str:
    """The whole Markdown report: settings, results per load point, cold starts."""
    parts = [f"# Benchmark {suite.created}", "",
             f"Model `{suite.model}`; " + ", ".join(f"{k}={v}" for k, v in suite.settings.items()),
             "", "## Load points", "", runs_table(suite, baseline)]
    if suite.systems:
        parts += ["", "## Cold start", "", cold_start_table(suite)]
    if launch_errors(suite):
        parts += ["", "## Failed launches", "", *launch_errors(suite)]
    return "\n".join(parts) + "\n"
