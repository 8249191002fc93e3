"""Small running estimates admission keeps of what it observes."""

from __future__ import annotations

import math


class PeakWindow:
    """The largest value noted within the last `window_s` (give or take half of it)."""

    def __init__(self, window_s: float, now: float) -> None:
        self._half_s = window_s / 2
        self._start = now
        self._current = self._previous = 0.0

    def note(self, value: float, now: float) -> None:
        self._rotate(now)
        self._current = max(self._current, value)

    def peak(self, now: float) -> float:
        self._rotate(now)
        return max(self._current, self._previous)

    def _rotate(self, now: float) -> None:
        halves = int((now - self._start) // self._half_s)
        if halves >= 1:
            self._previous = self._current if halves == 1 else 0.0
            self._current = 0.0
            self._start += halves * self._half_s


class Spread:
    """A smoothed mean and mean absolute deviation; `high` is a rare-but-seen value."""

    def __init__(self, smoothing: float) -> None:
        self._smoothing = smoothing
        self.mean: float | None = None
        self.deviation = 0.0

    def note(self, value: float) -> None:
        if self.mean is None:
            self.mean = value
            return
        self.deviation += self._smoothing * (abs(value - self.mean) - self.deviation)
        self.mean += self._smoothing * (value - self.mean)

    @property
    def high(self) -> float:
        # mean + 4 mean deviations: about the 99.7th percentile of a normal spread
        return 0.0 if self.mean is None else self.mean + 4 * self.deviation


class FadingSum:
    """A running sum whose every part fades by a factor e each `time_constant_s`: how much
    was noted lately, weighted to the recent past."""

    def __init__(self, time_constant_s: float, now: float, value: float = 0.0) -> None:
        self._time_constant_s = time_constant_s
        self._value = value
        self._at = now

    def value(self, now: float) -> float:
        if now > self._at:
            self._value *= math.exp((self._at - now) / self._time_constant_s)
            self._at = now
        return self._value

    def add(self, amount: float, now: float) -> None:
        self._value = max(0.0, self.value(now) + amount)
