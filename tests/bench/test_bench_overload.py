"""The overload benchmark's arithmetic: goodput over the sending window, refusals apart."""

from __future__ import annotations

import argparse

import pytest
import yaml

from bench.client import RequestResult
from bench.loop_lag import LoopLag
from bench.overload import (app_config, client_share, engine_arg, markdown, point, simulated_engine, vllm_engine,
                            with_burst_slots)
from bench.stats import Slo, summarise
from bench.systems import LOCAL_CONFIG
from serve_app.capacity import Capacity
from serve_app.config import AdmissionConfig
from serve_app.protocol import EngineStats

SLO = Slo(ttft_s=1.0)


def served(start_s: float, ttft_s: float) -> RequestResult:
    return RequestResult(stream=True, start_s=start_s, status=200, ttft_s=ttft_s, e2e_s=ttft_s + 1, output_tokens=4)


def refused(start_s: float, status: int, seconds: float) -> RequestResult:
    return RequestResult(stream=True, start_s=start_s, status=status, e2e_s=seconds, failure=str(status))


def test_a_point_counts_goodput_over_the_sending_window_and_times_refusals_apart():
    results = [served(0.0, 0.2), served(1.0, 1.5), served(2.0, 0.3), refused(2.5, 503, 0.01),
               refused(3.0, 429, 0.03), RequestResult(stream=True, start_s=3.5, failure="timeout")]
    found = point("on 2x", 2.0, results, summarise(results, wall_s=10.0, slo=SLO), SLO)
    assert found.sent == 6 and found.ok == 3
    assert found.goodput_rps == 2 / 4.0  # two met the SLO; sent over 3.5 s + one gap of 0.5 s
    assert found.refused == {"503": 1, "429": 1}
    assert found.other_failures == {"timeout": 1}
    assert 0.01 <= found.refusal_p50_s <= 0.03 and found.refusal_p99_s <= 0.03


def test_a_point_says_how_long_its_refusals_took_inside_the_router():
    results = [refused(0.1 * n, 503, 0.05) for n in range(10)]
    for n, result in enumerate(results):
        result.router_s = 0.001 * (n + 1)
    results.append(refused(2.0, 503, 0.02))  # from a system that sends no Server-Timing
    found = point("on 4x", 2.0, results, summarise(results, wall_s=3.0, slo=SLO), SLO)
    assert 0.009 <= found.refusal_router_p99_s <= 0.010 and found.refusal_p99_s == pytest.approx(0.05, abs=1e-3)


def test_admission_on_and_off_differ_only_in_admission_enabled():
    engine = simulated_engine()
    on, off = app_config(engine, True), app_config(engine, False)
    assert on["admission"].pop("enabled") is True and off["admission"].pop("enabled") is False
    assert on == off
    assert on["admission"]["classes"]["default"]["ttft_slo_s"] == engine.ttft_slo_s


def test_the_overload_app_runs_haproxy_as_the_local_config_does():
    local = yaml.safe_load(LOCAL_CONFIG.read_text())["http"]
    assert app_config(simulated_engine(), True)["http"]["haproxy_threads"] == local["haproxy_threads"]


def test_results_render_as_tables():
    results = [served(0.0, 0.2), refused(0.5, 503, 0.01)]
    found = point("on 1x", 2.0, results, summarise(results, 1.0, SLO), SLO)
    text = markdown({"created": "now", "commit": "abc", "admission": {
        "engine": "simulated", "input_tokens": 64, "output_tokens": 32, "slo_ttft_s": 1.0,
        "capacity_rps": 12.5, "on": [found.__dict__]}})
    assert "commit abc" in text and "| on 1x | 2.0 | 2 | 1 |" in text and "?: 1" in text


def test_results_say_whether_the_load_generator_ran_under_a_real_time_policy():
    assert "load generator under SCHED_FIFO" in markdown({"created": "now", "commit": "abc", "client_realtime": True})
    assert "load generator at the normal policy" in markdown({"created": "now", "commit": "abc"})


def test_engine_args_from_the_command_line_override_the_shared_settings():
    engine = vllm_engine("models/tiny-llama", 8, 64, 3.0,
                         engine_args=dict([engine_arg("max_num_batched_tokens=256"), engine_arg("max-num-seqs=4")]))
    args = engine.models_entry["engine_args"]
    assert args["max_num_batched_tokens"] == 256 and args["max_num_seqs"] == 4
    assert args["enforce_eager"] is True


def test_an_engine_arg_without_a_value_is_refused():
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        engine_arg("max_num_batched_tokens")


@pytest.mark.parametrize("make", [lambda: simulated_engine(max_batch=8),
                                  lambda: vllm_engine("models/tiny-llama", 8, 64, 3.0)])
def test_burst_slots_are_added_to_the_engine_and_kept_out_of_the_shares(make):
    engine = with_burst_slots(make(), 4)
    settings = engine.models_entry.get("simulated") or engine.models_entry["engine_args"]
    assert settings.get("max_batch", settings.get("max_num_seqs")) == 12
    admission = AdmissionConfig.model_validate(app_config(engine, True)["admission"])
    capacity = Capacity(burst_fraction=admission.burst_fraction)
    capacity.report("r", EngineStats(kv_capacity_tokens=12_000, max_num_seqs=12, max_model_len=2048), 0.0)
    assert capacity.budget(0.0).sequences == 8 == engine.slots  # the shares keep their slots


def test_a_refusal_is_timed_net_of_the_load_generators_stalls_while_it_was_in_flight():
    lag = LoopLag()
    lag.stalls = [(100.02, 100.05)]  # the client's loop was held up for 30 ms
    results = [refused(0.01, 503, 0.05), served(0.1, 0.2)]
    net_p99, stalls = client_share(lag, 100.0, results)
    assert abs(net_p99 - 0.02) < 1e-9 and stalls == 0.03
