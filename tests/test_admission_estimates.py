"""Admission's running estimates, specified."""

from __future__ import annotations

import math

import pytest

from serve_app.estimates import FadingSum, PeakWindow, Spread


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
