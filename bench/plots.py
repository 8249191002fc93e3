"""PNG plots of a suite: latency and throughput against load, one line per system."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

from bench.markdown import Metric, median_of  # noqa: E402
from bench.results import RunResult, SuiteResult  # noqa: E402

AXIS = {"closed": "concurrency (closed loop)", "open": "offered rate, requests/s (open loop)"}


def _series(suite: SuiteResult, kind: str, system: str, metric: Metric,
            scale: float = 1.0) -> tuple[list[float], list[float]]:
    """(x, median over repeats) for one system at every load point of `kind`."""
    points: dict[float, list[RunResult]] = {}
    for run in suite.runs:
        if run.system == system and run.load.kind == kind:
            points.setdefault(run.load.x, []).append(run)
    xs, ys = [], []
    for x in sorted(points):
        value = median_of(points[x], metric)
        if value is not None:
            xs.append(x)
            ys.append(value * scale)
    return xs, ys


def _kinds(suite: SuiteResult) -> list[str]:
    return [kind for kind in ("closed", "open") if any(r.load.kind == kind for r in suite.runs)]


def _systems(suite: SuiteResult) -> list[str]:
    return list(dict.fromkeys(run.system for run in suite.runs))


def _figure(suite: SuiteResult, title: str, ylabel: str,
            lines: list[tuple[str, Metric, float, str]], path: Path) -> Path:
    kinds = _kinds(suite)
    figure, axes = plt.subplots(1, max(len(kinds), 1), figsize=(6.5 * max(len(kinds), 1), 4.5),
                                squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind in zip(axes[0], kinds, strict=False):
        for index, system in enumerate(_systems(suite)):
            for suffix, metric, scale, style in lines:
                xs, ys = _series(suite, kind, system, metric, scale)
                if xs:
                    ax.plot(xs, ys, style, color=colours[index % len(colours)], marker="o",
                            label=f"{system} {suffix}".strip())
        xs = sorted({r.load.x for r in suite.runs if r.load.kind == kind})
        if xs and xs[-1] / max(xs[0], 1e-9) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(AXIS[kind])
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    figure.suptitle(f"{title} — {suite.model}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot(suite: SuiteResult, out_dir: Path) -> list[Path]:
    """Write latency.png and throughput.png into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    latency = _figure(suite, "Time to first token", "TTFT, ms", [
        ("p50", lambda r: r.summary.ttft_s.p50, 1000.0, "-"),
        ("p99", lambda r: r.summary.ttft_s.p99, 1000.0, "--"),
    ], out_dir / "latency.png")
    throughput = _figure(suite, "Throughput", "output tokens/s", [
        ("", lambda r: r.summary.output_tokens_per_s, 1.0, "-"),
    ], out_dir / "throughput.png")
    return [latency, throughput]
