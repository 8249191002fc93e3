"""The engine core's socket threads ask the kernel for a short scheduler slice."""

from __future__ import annotations

import threading

import pytest

from serve_app.engines import io_slice
from serve_app.engines.vllm_args import engine_env
from tests.engines.test_vllm_args import make_model

SHORT_NS = 100_000


def slices_in_thread(body) -> tuple[int | None, int | None]:
    """The slice of a thread running `body`, and of a thread that thread starts."""
    seen: dict[str, int | None] = {}

    def child() -> None:
        seen["child"] = io_slice.thread_slice()

    def run() -> None:
        body()
        seen["own"] = io_slice.thread_slice()
        started = threading.Thread(target=child)
        started.start()
        started.join()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen["own"], seen["child"]


@pytest.fixture
def custom_slices() -> None:
    """Skip where the kernel keeps its own slice (before Linux 6.12)."""
    own, _ = slices_in_thread(lambda: io_slice.set_thread_slice(SHORT_NS))
    if own != SHORT_NS:
        pytest.skip("this kernel has no per-thread fair-scheduling slice")


def test_a_thread_body_wrapped_for_a_short_slice_runs_with_it_and_its_threads_inherit_it(custom_slices):
    body = io_slice.with_short_slice(lambda: None, SHORT_NS)
    assert slices_in_thread(body) == (SHORT_NS, SHORT_NS)


def test_other_threads_keep_the_kernels_slice(custom_slices):
    default = io_slice.thread_slice()
    slices_in_thread(io_slice.with_short_slice(lambda: None, SHORT_NS))
    assert io_slice.thread_slice() == default != SHORT_NS


def test_register_wraps_the_engine_cores_socket_threads_once(monkeypatch):
    from vllm.v1.engine.core import EngineCoreProc

    for name in io_slice.SOCKET_THREADS:
        monkeypatch.setattr(EngineCoreProc, name, getattr(EngineCoreProc, name))
    originals = {name: getattr(EngineCoreProc, name) for name in io_slice.SOCKET_THREADS}
    monkeypatch.setenv(io_slice.ENV, "100")
    io_slice.register()
    io_slice.register()
    for name, original in originals.items():
        wrapped = getattr(EngineCoreProc, name)
        assert wrapped is not original and wrapped.__wrapped__ is original


@pytest.mark.parametrize("value", [None, "0"])
def test_register_leaves_vllm_alone_unless_the_replica_asks(monkeypatch, value):
    from vllm.v1.engine.core import EngineCoreProc

    originals = {name: getattr(EngineCoreProc, name) for name in io_slice.SOCKET_THREADS}
    if value is None:
        monkeypatch.delenv(io_slice.ENV, raising=False)
    else:
        monkeypatch.setenv(io_slice.ENV, value)
    io_slice.register()
    assert {name: getattr(EngineCoreProc, name) for name in io_slice.SOCKET_THREADS} == originals


def test_engine_env_asks_for_the_short_slice_unless_the_model_env_says_otherwise():
    assert engine_env(make_model(1, device="cpu"), cores=[0, 1])[io_slice.ENV] == "100"
    model = make_model(1, device="cpu", env={io_slice.ENV: "0"})
    assert engine_env(model, cores=[0, 1])[io_slice.ENV] == "0"
