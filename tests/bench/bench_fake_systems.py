"""Systems for tests that serve the fake OpenAI server instead of a model."""

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.systems import Model, System

FAKE_SERVER = Path(__file__).with_name("bench_fake_openai.py")

# With `stray`, the fake server first starts a grandchild that, like a Ray worker,
# lives in a process group of its own; stopping the system must still end it.
SPAWNER = """
import subprocess, sys
stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         start_new_session=True)
open(sys.argv[1], "w").write(str(stray.pid))
sys.argv = [sys.argv[2], "--port", sys.argv[3]]
exec(open(sys.argv[0]).read())
"""


@dataclass
class FakeSystem(System):
    stray: bool = False

    def command(self, port: int, work_dir: Path) -> list[str]:
        if not self.stray:
            return [sys.executable, str(FAKE_SERVER), "--port", str(port)]
        return [sys.executable, "-c", SPAWNER, str(work_dir / f"{self.name}-stray.pid"),
                str(FAKE_SERVER), str(port)]


@dataclass
class FailingSystem(System):
    def command(self, port: int, work_dir: Path) -> list[str]:
        return [sys.executable, "-c", "print('cannot load model'); raise SystemExit(3)"]


def fake_model(name: str) -> Model:
    return Model("unused", name)
