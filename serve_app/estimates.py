"""Small running estimates admission keeps of what it observes."""

from __future__ import annotations


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
