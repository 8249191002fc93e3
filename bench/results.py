"""The result schema of a benchmark suite, saved and loaded as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from bench.arrivals import Arrival, ClosedLoop, LoadPoint, OpenLoop
from bench.cpu import CpuUsage
from bench.stats import Summary


class Load(BaseModel):
    """A load point as data: closed loop at `concurrency`, or open loop at `rate`."""

    kind: Literal["closed", "open"]
    label: str
    x: float
    """Where the point sits on a plot's load axis: concurrency or requests/s."""
    concurrency: int | None = None
    rate: float | None = None
    arrival: Arrival | None = None
    shape: float | None = None
    seed: int | None = None

    @classmethod
    def of(cls, point: LoadPoint) -> Load:
        if isinstance(point, ClosedLoop):
            return cls(kind="closed", label=point.label, x=point.x, concurrency=point.concurrency)
        return cls(kind="open", label=point.label, x=point.x, rate=point.rate,
                   arrival=point.arrival, shape=point.shape, seed=point.seed)

    def point(self) -> LoadPoint:
        if self.kind == "closed":
            return ClosedLoop(self.concurrency or 1)
        return OpenLoop(self.rate or 1.0, self.arrival or "poisson", self.shape or 0.5, self.seed or 0)


class RunResult(BaseModel):
    """One measured run: one system at one load point in one repeat."""

    system: str
    load: Load
    repeat: int
    stream: bool
    summary: Summary
    cpu: CpuUsage | None = None
    frontend_cpu_ms_per_token: float | None = None


class SystemResult(BaseModel):
    name: str
    ready_s: list[float] = []
    """Process start until GET /v1/models answers, one per launch."""
    cold_start_s: list[float] = []
    """Process start until the first chat completion succeeds, one per launch."""
    errors: list[str] = []
    """Launches that failed, and why."""


class SuiteResult(BaseModel):
    created: str
    model: str
    settings: dict[str, Any] = {}
    """The workload and command-line settings the suite ran with."""
    baseline: str | None = None
    systems: list[SystemResult] = []
    runs: list[RunResult] = []

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> SuiteResult:
        return cls.model_validate_json(path.read_text())

    def system(self, name: str) -> SystemResult:
        found = next((system for system in self.systems if system.name == name), None)
        if found is None:
            found = SystemResult(name=name)
            self.systems.append(found)
        return found
