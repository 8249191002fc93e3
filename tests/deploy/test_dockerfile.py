"""The Dockerfile cannot be built here; this pins what it must agree with."""

from __future__ import annotations

import re
import sys
import tomllib

import ray

from serve_app import render
from tests.deploy.cluster import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(name + " ")]


def test_based_on_the_ray_gpu_image_of_our_ray_and_python():
    (base,) = instructions("FROM")
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert base == f"rayproject/ray:{ray.__version__}-{python}-gpu"
    assert ray.__version__ == render.RAY_VERSION
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"ray[serve]=={ray.__version__}" in pins


def test_installs_our_package_with_the_gpu_extra():
    (run,) = instructions("RUN")
    assert 'pip install --no-cache-dir ".[gpu]"' in run
    copied = {line.split()[-2] for line in instructions("COPY")}
    assert {"serve_app", "pyproject.toml"} <= copied


def test_the_build_command_names_the_image_the_artifacts_run():
    assert f"docker build -t {render.Infra().image} ." in DOCKERFILE
    assert f"docker push {render.Infra().image}" in DOCKERFILE


def test_the_build_context_holds_only_what_the_image_needs_and_no_secrets():
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    assert patterns[0] == "*"  # everything out (.git, .venv, models/), then the few things in
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {line.split()[-2] for line in instructions("COPY")}
    assert copied <= allowed
    assert "**/*.env" in patterns and re.fullmatch(r".*\.env", render.ENV_FILE)
