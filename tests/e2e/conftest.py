from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import API_KEY, Stack, local_config, running_stack


@pytest.fixture(scope="session")
def stack(tiny_model) -> Iterator[Stack]:
    """The default local config (real vLLM on the tiny model) with an API key."""
    with running_stack(local_config(router={"replicas": 1, "num_cpus": 0.2, "max_body_bytes": 1_000_000})) as running:
        yield running


@pytest.fixture
def client(stack: Stack):
    from openai import OpenAI

    return OpenAI(base_url=stack.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def uses_shared_stack(item: pytest.Item) -> bool:
    definitions = getattr(item, "_fixtureinfo", None)
    chosen = definitions.name2fixturedefs.get("stack") if definitions else None
    return bool(chosen) and chosen[-1].scope == "session"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One Ray instance per test process: the shared stack lives until the session ends,
    # so the modules that start their own in-process stack must all run before it.
    items.sort(key=uses_shared_stack)
