"""A one-line progress bar on stderr, redrawn at most a few times a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str = "", stream: TextIO | None = None,
                 width: int = 30, interval_s: float = 0.2) -> None:
        self.total, self.label, self.width, self.interval_s = total, label, width, interval_s
        self.stream = stream or sys.stderr
        if not self.stream.isatty():
            self.interval_s = max(interval_s, 5.0)  # whole lines in a log: fewer of them
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def advance(self, ok: bool = True) -> None:
        self.done += 1
        self.failed += not ok
        now = time.monotonic()
        if now - self._drawn >= self.interval_s or self.done >= self.total:
            self._drawn = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        filled = self.width * self.done // max(self.total, 1)
        elapsed = (now or time.monotonic()) - self.started
        failed = f" {self.failed} failed" if self.failed else ""
        return (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done}/{self.total} {elapsed:5.1f}s{failed}")

    def _draw(self, now: float) -> None:
        # A terminal redraws the line in place; a log file gets whole lines.
        end = "\r" if self.stream.isatty() else "\n"
        self.stream.write(self.line(now) + end)
        self.stream.flush()

    def close(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()
