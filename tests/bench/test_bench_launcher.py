"""Launching a system: readiness, cold start, failing fast, and stopping all it started."""

import time

import pytest
from bench_fake_systems import FailingSystem, FakeSystem, fake_model

from bench.cpu import read_process
from bench.launcher import LaunchError, launch, stop, wait_first_completion, wait_ready


class TestLaunching:
    def test_ready_then_cold_start_then_stopped_with_everything_it_started(self, tmp_path):
        running = launch(FakeSystem("fake", fake_model("tiny"), stray=True), tmp_path)
        try:
            ready = wait_ready(running, timeout_s=20)
            cold = wait_first_completion(running, timeout_s=20)
            assert 0 < ready <= cold < 20
            stray = int((tmp_path / "fake-stray.pid").read_text())
            assert read_process(stray) is not None
        finally:
            stop(running, grace_s=5, linger_s=0.5)
        assert running.process.returncode is not None
        deadline = time.monotonic() + 5
        while read_process(stray) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_process(stray) is None

    def test_a_system_that_exits_fails_fast_with_its_log(self, tmp_path):
        running = launch(FailingSystem("bad", fake_model("tiny")), tmp_path)
        try:
            with pytest.raises(LaunchError, match="exited with 3") as error:
                wait_ready(running, timeout_s=20)
            assert "cannot load model" in str(error.value)
        finally:
            stop(running, grace_s=1, linger_s=0)

    def test_a_model_that_is_never_listed_times_out(self, tmp_path):
        running = launch(FakeSystem("fake", fake_model("other")), tmp_path)
        try:
            with pytest.raises(LaunchError, match="no model listed"):
                wait_ready(running, timeout_s=1)
        finally:
            stop(running, grace_s=5)
