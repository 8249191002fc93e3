"""Start a system under test, wait until it serves, time its cold start, stop it.

Each system runs in its own session and process group; stopping it also kills
every process it started, since Ray moves its workers into groups of their own.
Readiness is GET /v1/models listing the model; cold start is process start
until the first chat completion succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from bench.cpu import ProcessCpu, all_processes, read_process, trees
from bench.systems import LOOPBACK, System
from serve_app.ray_env import free_port

VENV_BIN = Path(sys.executable).parent


class LaunchError(RuntimeError):
    """A system that exited or did not become ready; the message ends with its log."""


@dataclass
class Running:
    system: System
    process: subprocess.Popen
    port: int
    started: float
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid


def launch(system: System, log_dir: Path, headers: dict[str, str] | None = None) -> Running:
    """Start `system` on a free port, its output going to a log file in `log_dir`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = log_dir / f"{system.name}-{time.strftime('%H%M%S')}-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(system.command(port, log_dir), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **system.env}, start_new_session=True)
    return Running(system, process, port, time.monotonic(), log_path, dict(headers or {}))


def _log_tail(running: Running, lines: int = 40) -> str:
    try:
        return "\n".join(running.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _fail(running: Running, reason: str) -> LaunchError:
    return LaunchError(f"{running.system.name}: {reason} (log {running.log_path}):\n{_log_tail(running)}")


def _poll(running: Running, attempt, timeout_s: float, what: str) -> float:
    """Call `attempt` until it returns True; seconds from process start until then."""
    deadline = running.started + timeout_s
    with httpx.Client(base_url=running.base_url, headers=running.headers, timeout=30.0) as client:
        while time.monotonic() < deadline:
            if running.process.poll() is not None:
                raise _fail(running, f"exited with {running.process.returncode} before {what}")
            try:
                if attempt(client):
                    return time.monotonic() - running.started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise _fail(running, f"no {what} within {timeout_s:g} s")


def wait_ready(running: Running, timeout_s: float = 900.0) -> float:
    """Seconds from process start until GET /v1/models lists the model."""
    name = running.system.model.name

    def listed(client: httpx.Client) -> bool:
        response = client.get("/v1/models")
        return response.status_code == 200 and any(
            model.get("id") == name for model in response.json().get("data", []))

    return _poll(running, listed, timeout_s, "model listed on /v1/models")


def wait_first_completion(running: Running, timeout_s: float = 900.0) -> float:
    """Seconds from process start until a chat completion succeeds: the cold start."""
    body = {"model": running.system.model.name, "max_tokens": 1,
            "messages": [{"role": "user", "content": "hello"}]}

    def answered(client: httpx.Client) -> bool:
        return client.post("/v1/chat/completions", json=body).status_code == 200

    return _poll(running, answered, timeout_s, "successful chat completion")


def stop(running: Running, grace_s: float = 30.0, ray_stop: bool = True,
         linger_s: float = 10.0) -> None:
    """Ask the server to stop, then kill its process group and every process it started.

    Ray puts its workers in process groups of their own, so the group is not enough:
    descendants found before stopping get `linger_s` to exit by themselves and are then
    killed too, and Ray systems then get `ray stop --force` unless `ray_stop` is False
    (it stops every Ray on the machine).
    """
    group = running.process.pid  # the leader of its own session and group
    descendants = trees([running.pid], all_processes())
    _signal(running.process.send_signal, signal.SIGTERM)
    try:
        running.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _wait_gone(descendants, linger_s)
    _signal(partial(os.killpg, group), signal.SIGKILL)
    running.process.wait()
    _kill_survivors(descendants)
    if running.system.uses_ray and ray_stop:
        subprocess.run([str(VENV_BIN / "ray"), "stop", "--force"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120, check=False)


def _signal(send, signum: int) -> None:
    try:
        send(signum)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(processes: list[ProcessCpu]) -> list[ProcessCpu]:
    """Those still running; a pid now held by another process does not count."""
    alive = []
    for process in processes:
        now = read_process(process.pid)
        if now is not None and now.start_ticks == process.start_ticks and not _zombie(process.pid):
            alive.append(process)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


def _wait_gone(processes: list[ProcessCpu], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)


def _kill_survivors(processes: list[ProcessCpu]) -> None:
    for process in _alive(processes):
        _signal(partial(os.kill, process.pid), signal.SIGKILL)


