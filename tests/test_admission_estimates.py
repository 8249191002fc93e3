"""Admission's running estimates, specified."""

from __future__ import annotations

import math

import pytest

from serve_app.estimates import FadingRate, FadingSum, PaceCurve, PeakWindow, Spread


def test_a_peak_is_remembered_for_the_window_and_then_forgotten():
    window = PeakWindow(10.0, now=0.0)
    window.note(8.0, now=1.0)
    window.note(3.0, now=2.0)
    assert window.peak(2.0) == 8.0
    assert window.peak(9.0) == 8.0  # still within the window
    assert window.peak(10.5) == 0.0  # a whole window later
    window.note(5.0, now=11.0)
    assert window.peak(14.0) == 5.0


def test_a_spread_learns_a_mean_and_a_high_value():
    spread = Spread(0.1)
    assert spread.high == 0.0
    for value in [0.1, 0.3] * 200:
        spread.note(value)
    assert 0.18 < spread.mean < 0.22
    assert 0.5 < spread.high < 0.7


def test_a_fading_sum_loses_a_factor_e_per_time_constant_and_never_goes_negative():
    total = FadingSum(10.0, now=0.0)
    total.add(100.0, now=0.0)
    assert total.value(10.0) == pytest.approx(100.0 / math.e)
    total.add(-1000.0, now=10.0)
    assert total.value(20.0) == 0.0


def test_a_pace_learned_at_one_crowd_is_stretched_in_proportion_above_it_and_kept_below():
    curve = PaceCurve(0.1)
    assert not curve.known
    curve.note(0.004, crowd=2.0)
    assert curve.known
    assert curve.at(1.0) == curve.at(2.0) == pytest.approx(0.004)
    assert curve.at(8.0) == pytest.approx(0.016)


def test_a_pace_seen_at_a_larger_crowd_replaces_the_proportional_stretch():
    curve = PaceCurve(0.1)
    curve.note(0.004, crowd=2.0)
    curve.note(0.010, crowd=20.0)  # this engine slows far less than in proportion
    assert curve.at(20.0) == pytest.approx(0.010)
    assert curve.at(11.0) == pytest.approx(0.007)  # halfway between the two crowds
    assert curve.at(40.0) == pytest.approx(0.020)  # beyond every crowd seen: in proportion again


def test_a_pace_is_never_faster_at_a_larger_crowd():
    curve = PaceCurve(0.1)
    curve.note(0.010, crowd=2.0)
    curve.note(0.006, crowd=8.0)  # noise: a quick release in a crowd
    assert curve.at(8.0) == pytest.approx(0.010)
    assert curve.at(16.0) == pytest.approx(0.020)


def test_each_crowd_band_learns_its_own_smoothed_pace():
    curve = PaceCurve(0.5)
    curve.note(0.010, crowd=8.0)
    curve.note(0.020, crowd=9.0)  # the same band (8-15)
    assert curve.at(8.5) == pytest.approx(0.015)
    curve.note(0.002, crowd=1.0)  # another band leaves it alone
    assert curve.at(8.5) == pytest.approx(0.015)


def test_a_fading_rate_reads_a_steady_flow_whatever_its_age():
    rate = FadingRate(10.0, now=0.0)
    for tick in range(1, 301):  # 5 per second, in fifths of a second
        rate.note(1.0, now=tick / 5)
        if tick in (10, 50, 300):  # at 2 s, 10 s and 60 s old
            assert rate.per_second(tick / 5) == pytest.approx(5.0, rel=0.1)


def test_a_fading_rate_forgets_a_flow_that_stopped():
    rate = FadingRate(10.0, now=0.0)
    for tick in range(1, 51):
        rate.note(1.0, now=tick / 5)
    flowing = rate.per_second(10.0)
    assert rate.per_second(40.0) < 0.1 * flowing


def test_a_fading_rate_counts_a_first_note_over_at_least_its_least_age():
    rate = FadingRate(10.0, now=0.0, min_age_s=1.0)
    rate.note(3.0, now=0.0)
    assert rate.per_second(0.0) == pytest.approx(3.0, rel=0.06)
