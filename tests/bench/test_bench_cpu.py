"""CPU accounting of process trees from /proc, split into engine and front end."""

import os
from pathlib import Path

import pytest

from bench.cpu import (
    ProcessCpu,
    all_processes,
    frontend_ms_per_token,
    is_engine_core,
    parse_stat,
    process_name,
    read_process,
    sample,
    split,
    trees,
    used_between,
)

TICKS = os.sysconf("SC_CLK_TCK")


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, start: int = 1000) -> str:
    # Fields 3..22 of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime.
    fields = ["S", ppid, ppid, ppid, 0, -1, 0, 0, 0, 0, 0, utime, stime, 50, 50, 20, 0, 1, 0, start]
    return f"{pid} ({comm}) " + " ".join(map(str, fields)) + " 0 0\n"


def fake_process(proc: Path, pid: int, ppid: int, cmdline: list[str], ticks: int,
                 comm: str = "python", start: int = 1000) -> None:
    directory = proc / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "stat").write_text(stat_line(pid, comm, ppid, ticks, ticks, start))
    (directory / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in cmdline) + b"\0")


@pytest.fixture
def vllm_tree(tmp_path: Path) -> Path:
    """An API server (100) with an engine core (101) driving a worker (102), and a stranger."""
    proc = tmp_path / "proc"
    fake_process(proc, 100, 1, ["python", "-m", "vllm.entrypoints.openai.api_server"], 100)
    fake_process(proc, 101, 100, ["VLLM::EngineCore"], 200, comm="VLLM::EngineCor")
    fake_process(proc, 102, 101, ["VLLM::Worker"], 400, comm="VLLM::Worker")
    fake_process(proc, 200, 1, ["/usr/bin/other"], 999)
    (proc / "self").mkdir()
    return proc


class TestStatLines:
    def test_cpu_is_user_plus_system_time_in_seconds(self):
        process = parse_stat(stat_line(42, "python", 7, 300, 100, start=555), "x", 100.0)
        assert (process.pid, process.ppid, process.start_ticks) == (42, 7, 555)
        assert process.cpu_s == pytest.approx(4.0)

    def test_command_names_may_hold_spaces_and_parentheses(self):
        process = parse_stat(stat_line(9, "a (b) c", 3, 10, 10), "x", 10.0)
        assert (process.pid, process.ppid, process.cpu_s) == (9, 3, 2.0)


class TestProcessNames:
    @pytest.mark.parametrize("args, name", [
        (["VLLM::EngineCore"], "VLLM::EngineCore"),
        (["ray::ServeReplica:default:LLMServer:tiny"], "ray::ServeReplica:default:LLMServer:tiny"),
        (["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--port", "1"],
         "vllm.entrypoints.openai.api_server"),
        (["/venv/bin/python3.11", "-u", "/x/dashboard.py", "--port", "1"], "dashboard.py"),
        (["/venv/bin/python", "-c", "import x"], "python -c"),
        (["/x/ray/core/src/ray/raylet/raylet", "--flag"], "raylet"),
    ])
    def test_names_say_what_the_process_is(self, args, name):
        assert process_name(b"\0".join(a.encode() for a in args) + b"\0", "comm") == name

    def test_a_process_without_command_line_is_named_by_comm(self):
        assert process_name(b"", "kworker") == "kworker"


class TestTrees:
    def test_a_tree_is_its_root_and_all_descendants(self, vllm_tree: Path):
        found = trees([100], all_processes(vllm_tree))
        assert sorted(p.pid for p in found) == [100, 101, 102]

    def test_unknown_roots_give_nothing(self, vllm_tree: Path):
        assert trees([12345], all_processes(vllm_tree)) == []

    def test_a_vanished_process_reads_as_none(self, vllm_tree: Path):
        assert read_process(999, vllm_tree) is None

    def test_the_real_proc_holds_this_test(self):
        assert os.getpid() in {p.pid for p in trees([os.getpid()], all_processes())}


class TestUsageBetweenSamples:
    def test_each_process_counts_what_it_used_in_between(self, vllm_tree: Path):
        before = sample([100], vllm_tree)
        fake_process(vllm_tree, 100, 1, ["python", "-m", "vllm.entrypoints.openai.api_server"], 150)
        fake_process(vllm_tree, 102, 101, ["VLLM::Worker"], 1400, comm="VLLM::Worker")
        used = used_between(before, sample([100], vllm_tree))
        assert used["vllm.entrypoints.openai.api_server"] == pytest.approx(100 / TICKS)
        assert used["VLLM::EngineCore"] == pytest.approx(0.0)
        assert used["VLLM::Worker"] == pytest.approx(2000 / TICKS)
        assert "other" not in used

    def test_a_process_started_in_between_counts_in_full(self, vllm_tree: Path):
        before = sample([100], vllm_tree)
        fake_process(vllm_tree, 103, 100, ["python", "-m", "tokenizer_pool"], 25)
        assert used_between(before, sample([100], vllm_tree))["tokenizer_pool"] == pytest.approx(50 / TICKS)

    def test_a_reused_pid_is_a_new_process(self):
        old = ProcessCpu(5, 1, start_ticks=10, name="old", cpu_s=9.0)
        new = ProcessCpu(5, 1, start_ticks=20, name="new", cpu_s=1.0)
        assert used_between({old.key: old}, {new.key: new}) == {"new": 1.0}

    def test_processes_sharing_a_name_add_up(self):
        a = ProcessCpu(1, 0, 1, "ray::IDLE", 1.0)
        b = ProcessCpu(2, 0, 1, "ray::IDLE", 2.0)
        assert used_between({}, {a.key: a, b.key: b}) == {"ray::IDLE": 3.0}


class TestFrontEndSplit:
    BREAKDOWN = {"vllm.entrypoints.openai.api_server": 1.5, "VLLM::EngineCore": 2.0,
                 "VLLM::Worker": 6.0, "ray::ServeReplica:llm:Router": 0.5}

    def test_the_front_end_is_everything_but_the_engine(self):
        usage = split(self.BREAKDOWN)
        assert usage.engine_s == pytest.approx(8.0)
        assert usage.frontend_s == pytest.approx(2.0)
        assert usage.total_s == pytest.approx(10.0)
        assert usage.by_name == self.BREAKDOWN

    def test_the_engine_is_what_the_predicate_says(self):
        usage = split(self.BREAKDOWN, lambda name: name == "VLLM::Worker")
        assert (usage.engine_s, usage.frontend_s) == (pytest.approx(6.0), pytest.approx(4.0))

    def test_vllm_api_servers_and_coordinators_are_front_end(self):
        assert is_engine_core("VLLM::EngineCore_DP1") and is_engine_core("VLLM::Worker_TP0")
        assert not is_engine_core("VLLM::APIServer_0") and not is_engine_core("VLLM::DPCoordinator")

    def test_front_end_cpu_per_streamed_token(self):
        usage = split(self.BREAKDOWN)
        assert frontend_ms_per_token(usage, 4000) == pytest.approx(0.5)
        assert frontend_ms_per_token(usage, 0) is None
