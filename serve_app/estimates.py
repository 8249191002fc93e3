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


class FadingRate:
    """How much is noted per second lately: a `FadingSum` divided by the time it covers.
    A tracker younger than its time constant counts only the time it has lived (but at
    least `min_age_s`), so a rate is not underestimated while it is new."""

    def __init__(self, time_constant_s: float, now: float, min_age_s: float = 1.0) -> None:
        self._sum = FadingSum(time_constant_s, now)
        self._time_constant_s = time_constant_s
        self._born, self._min_age_s = now, min_age_s

    def note(self, amount: float, now: float) -> None:
        self._sum.add(amount, now)

    def per_second(self, now: float) -> float:
        age = max(now - self._born, self._min_age_s)
        covered = self._time_constant_s * -math.expm1(-age / self._time_constant_s)
        return self._sum.value(now) / covered


class PaceCurve:
    """Seconds per output token a lease is held, by the crowd (leases in flight) it ran in.

    An engine that batches slows as its crowd grows, but by how much is its own: on a GPU
    a decode step barely lengthens, on a CPU it grows almost in proportion. So the pace is
    learned per band of crowd (powers of two), each band a smoothed pace and the mean crowd
    it was learned at. Between two learned crowds it is interpolated; above the most
    crowded one it is stretched in proportion, the most a compute-bound engine slows;
    below the least crowded one it is that band's. Never faster at a larger crowd."""

    def __init__(self, smoothing: float) -> None:
        self._smoothing = smoothing
        self._bands: dict[int, tuple[Spread, Spread]] = {}
        self._points: list[tuple[float, float]] = []
        """(crowd, pace) per band by crowd, each pace at least the one before it: rebuilt at
        each release, read for every lease at every foresight."""

    @property
    def known(self) -> bool:
        return bool(self._points)

    def note(self, pace: float, crowd: float) -> None:
        crowd = max(1.0, crowd)
        band = int(math.log2(crowd))
        if band not in self._bands:
            self._bands[band] = (Spread(self._smoothing), Spread(self._smoothing))
        paces, crowds = self._bands[band]
        paces.note(pace)
        crowds.note(crowd)
        self._points, slowest = [], 0.0
        for band in sorted(self._bands):
            paces, crowds = self._bands[band]
            slowest = max(slowest, paces.mean or 0.0)
            self._points.append((crowds.mean or 1.0, slowest))

    def at(self, crowd: float) -> float:
        """The pace at `crowd` leases in flight; the curve must be `known`."""
        points = self._points
        below = [point for point in points if point[0] <= crowd]
        if not below:
            return points[0][1]
        (low_crowd, low_pace) = below[-1]
        if len(below) == len(points):
            return low_pace * max(1.0, crowd / low_crowd)
        (high_crowd, high_pace) = points[len(below)]
        return low_pace + (high_pace - low_pace) * (crowd - low_crowd) / (high_crowd - low_crowd)
