"""Shared test set-up: where the tiny model lives, and marking end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

# The serving path's Ray settings (HAProxy ingress, throughput-optimised Serve) must
# be in the environment before any test module imports Ray.
from serve_app.config import load_config  # noqa: E402  (no Ray import behind it)
from serve_app.ray_env import apply_ray_environment  # noqa: E402

apply_ray_environment(load_config(Path(__file__).resolve().parent.parent / "deploy" / "local.yaml"), os.environ)

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = ROOT / "models" / "tiny-llama"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from serve_app.tiny_model import is_complete, write_tiny_model

    if not is_complete(TINY_MODEL):
        write_tiny_model(TINY_MODEL)
    return TINY_MODEL


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
