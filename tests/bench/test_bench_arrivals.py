"""Arrival schedules: seeded, at the asked mean rate, gamma burstier than Poisson."""

import statistics

import pytest

from bench.arrivals import ClosedLoop, OpenLoop, gamma_offsets, poisson_offsets


def gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in zip(offsets, offsets[1:])]


def coefficient_of_variation(values: list[float]) -> float:
    return statistics.pstdev(values) / statistics.fmean(values)


@pytest.mark.parametrize("schedule", [poisson_offsets, gamma_offsets])
class TestOpenLoopSchedules:
    def test_same_seed_same_schedule_other_seed_other_schedule(self, schedule):
        assert schedule(100, 5.0, seed=1) == schedule(100, 5.0, seed=1)
        assert schedule(100, 5.0, seed=1) != schedule(100, 5.0, seed=2)

    def test_starts_at_zero_and_never_goes_back(self, schedule):
        offsets = schedule(500, 3.0, seed=7)
        assert len(offsets) == 500
        assert offsets[0] == 0.0
        assert all(b >= a for a, b in zip(offsets, offsets[1:]))

    def test_mean_rate_is_the_asked_rate(self, schedule):
        offsets = schedule(20001, 8.0, seed=3)
        assert (len(offsets) - 1) / offsets[-1] == pytest.approx(8.0, rel=0.05)


def test_poisson_gaps_vary_as_much_as_they_average():
    assert coefficient_of_variation(gaps(poisson_offsets(20001, 4.0, seed=5))) == pytest.approx(1.0, abs=0.05)


def test_gamma_with_shape_below_one_is_burstier_than_poisson():
    poisson = coefficient_of_variation(gaps(poisson_offsets(20001, 4.0, seed=5)))
    bursty = coefficient_of_variation(gaps(gamma_offsets(20001, 4.0, shape=0.25, seed=5)))
    assert bursty > 1.5 * poisson
    assert bursty == pytest.approx(2.0, rel=0.1)  # 1 / sqrt(shape)


def test_load_points_name_themselves_and_their_plot_position():
    assert (ClosedLoop(64).label, ClosedLoop(64).x) == ("c=64", 64.0)
    point = OpenLoop(2.5, "gamma", shape=0.5, seed=9)
    assert (point.label, point.x) == ("r=2.5 gamma", 2.5)
    assert point.offsets(50) == gamma_offsets(50, 2.5, 0.5, 9)
    assert OpenLoop(2.5).offsets(50) == poisson_offsets(50, 2.5, 0)
