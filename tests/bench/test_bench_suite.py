"""A suite runs every system at every load point, alternating systems over repeats."""

from bench_fake_systems import FailingSystem, FakeSystem, fake_model

from bench.arrivals import ClosedLoop
from bench.results import SuiteResult
from bench.suite import SuiteOptions, run_suite
from bench.systems import EngineSettings, Model, System
from bench.workload import Workload


def test_a_suite_alternates_systems_over_repeats_and_writes_its_report(tmp_path):
    def make(name: str, model: Model, engine: EngineSettings, app_config) -> System:
        return FailingSystem(name, model) if name == "broken" else FakeSystem(name, model)

    options = SuiteOptions(systems=["a", "b", "broken"], model=fake_model("tiny"),
                           loads=[ClosedLoop(2)], out=tmp_path / "out",
                           workload=Workload(requests=4, output_tokens=3), repeats=2,
                           baseline="a", warmup_requests=1, launch_timeout_s=20)
    suite = run_suite(options, make)
    assert [(run.system, run.repeat) for run in suite.runs] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert all(run.summary.succeeded == 4 for run in suite.runs)
    assert all(run.cpu is not None and run.cpu.total_s >= 0 for run in suite.runs)
    assert len(suite.system("a").cold_start_s) == 2
    assert len(suite.system("broken").errors) == 2
    out = tmp_path / "out"
    assert SuiteResult.load(out / "results.json") == suite
    assert "÷ a" in (out / "results.md").read_text()
    assert (out / "throughput.png").exists()
