"""A model's budget from its replicas' reports: summed, stale ones dropped, tightened under saturation."""

from __future__ import annotations

import pytest

from serve_app.capacity import FLOOR, Budget, Capacity, engine_queue
from serve_app.protocol import EngineStats

REPLICA = EngineStats(kv_capacity_tokens=10_000, max_num_seqs=10, max_model_len=4096)


def test_no_report_means_no_budget():
    assert Capacity().budget(0.0).tokens == 0 and Capacity().budget(0.0).replicas == 0


def test_the_budget_sums_the_live_replicas():
    capacity = Capacity(kv_fraction=0.5)
    capacity.report("a", REPLICA, now=0.0)
    capacity.report("b", REPLICA, now=0.0)
    assert capacity.budget(0.0) == Budget(tokens=10_000, sequences=20, replicas=2, max_model_len=4096)


def test_a_replica_silent_for_longer_than_stale_after_is_gone():
    capacity = Capacity(stale_after_s=3.0)
    capacity.report("a", REPLICA, now=0.0)
    capacity.report("b", REPLICA, now=2.0)
    assert capacity.budget(3.5).replicas == 1
    assert capacity.budget(5.5).replicas == 0


def test_a_replica_that_reports_no_capacity_yet_adds_nothing():
    capacity = Capacity()
    capacity.report("starting", EngineStats(), now=0.0)
    assert capacity.budget(0.0).replicas == 0


def test_sequences_are_capped_by_max_in_flight():
    capacity = Capacity(max_sequences=4)
    capacity.report("a", REPLICA, now=0.0)
    assert capacity.budget(0.0).sequences == 4


def test_each_replica_may_hold_a_share_of_its_slots_queued_so_slots_refill_without_a_round_trip():
    capacity = Capacity(engine_queue_fraction=0.25)
    capacity.report("a", REPLICA, now=0.0)
    capacity.report("b", EngineStats(kv_capacity_tokens=10_000, max_num_seqs=1, max_model_len=4096), now=0.0)
    assert capacity.budget(0.0).sequences == (10 + 3) + (1 + 1)


def test_a_queue_within_the_allowance_is_no_saturation_and_one_beyond_it_is():
    capacity = Capacity(engine_queue_fraction=0.25)
    for step in range(10):
        capacity.report("a", EngineStats(kv_capacity_tokens=10_000, max_num_seqs=10, running=13), now=step)
    assert capacity.factor == 1.0
    capacity.report("a", EngineStats(kv_capacity_tokens=10_000, max_num_seqs=10, running=14), now=11)
    assert capacity.factor < 1.0


def test_a_request_is_charged_at_least_a_slot_and_at_most_the_whole_budget():
    budget = Budget(tokens=1000, sequences=4, replicas=1)
    assert budget.slot_tokens == 250
    assert budget.charge(10) == 250
    assert budget.charge(600) == 600
    assert budget.charge(5000) == 1000


def test_a_request_of_several_sequences_is_charged_a_slot_for_each():
    budget = Budget(tokens=1000, sequences=4, replicas=1)
    assert budget.charge(10, sequences=3) == 750
    assert budget.charge(900, sequences=3) == 900
    assert budget.charge(10, sequences=16) == 1000


@pytest.mark.parametrize("saturated", [
    EngineStats(kv_capacity_tokens=10_000, max_num_seqs=10, running=10, waiting=3),
    EngineStats(kv_capacity_tokens=10_000, max_num_seqs=10, running=12),  # vLLM: unfinished > limit
    EngineStats(kv_capacity_tokens=10_000, max_num_seqs=10, kv_usage=0.99),
])
def test_a_saturated_engine_tightens_the_budget_down_to_a_floor(saturated):
    capacity = Capacity()
    for step in range(100):
        capacity.report("a", saturated, now=step * 0.5)
    assert capacity.factor == FLOOR
    assert capacity.budget(50.0).tokens == pytest.approx(5000)


def test_the_budget_recovers_once_the_engine_keeps_up():
    capacity = Capacity()
    for step in range(10):
        capacity.report("a", EngineStats(kv_capacity_tokens=100, max_num_seqs=1, running=1, waiting=1), now=step)
    tightened = capacity.factor
    for step in range(10, 100):
        capacity.report("a", REPLICA, now=step)
    assert tightened < 1.0 and capacity.factor == 1.0


def test_engine_queue_counts_requests_waiting_for_a_slot():
    assert engine_queue(EngineStats(running=5, max_num_seqs=10)) == 0
    assert engine_queue(EngineStats(running=12, max_num_seqs=10)) == 2  # vLLM: unfinished beyond the limit
    assert engine_queue(EngineStats(running=10, max_num_seqs=10, waiting=4)) == 4
    assert engine_queue(EngineStats(running=6, max_num_seqs=10, waiting=4)) == 0  # only waiting for a step


def test_a_burst_fraction_keeps_slots_and_their_tokens_out_of_the_shares():
    capacity = Capacity(burst_fraction=0.25)
    capacity.report("a", REPLICA, now=0.0)
    capacity.report("b", REPLICA, now=0.0)
    budget = capacity.budget(0.0)
    assert (budget.sequences, budget.tokens, budget.burst_tokens) == (15, 15_000, 5_000)
    assert budget.slot_tokens == 1_000  # a slot is the same size in the burst room


def test_a_lone_slot_is_never_kept_for_bursts():
    capacity = Capacity(burst_fraction=0.5)
    capacity.report("a", EngineStats(kv_capacity_tokens=1000, max_num_seqs=1, max_model_len=1000), now=0.0)
    assert capacity.budget(0.0).sequences == 1 and capacity.budget(0.0).burst_tokens == 0
