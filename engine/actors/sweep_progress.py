"""The sweep's progress bar: `[#####.....] 12/40  3.1/s  eta 9 s`, redrawn at least once a
second while the sweep runs, with an estimate that does not promise more than the results show.

The bar is a `progress(done, total, row)` callback plus `refresh()`, which the sweep calls
between results (several times a second) so the line keeps moving while workers are busy on
long combinations. Time comes from the `clock` it is given (seconds, monotonic), so tests drive
it with a fake one. It never reads results beyond counting them.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressBar", "eta_seconds"]

# A terminal line is redrawn this often at most when results pour in (seconds): more costs the
# sweep time and shows nothing a person can read.
MIN_REDRAW = 0.1
# Without a terminal (a log file, CI) a line is written at each tenth done, and at least this
# often (seconds) in between, so a log shows a long sweep is alive.
LOG_EVERY = 30.0


def eta_seconds(done: int, total: int, first: float | None, first_done: int, now: float
                ) -> float | None:
    """Seconds left, from the rate since the first result (`first`, the time it came;
    `first_done`, how many were done by then): the start-up before any result (workers
    importing, loading data) is not work and is left out of the rate. The rate counts the
    time since the last result too, so a stalled sweep's estimate grows instead of freezing.
    None until a rate is known (fewer than one result after the first)."""
    if first is None or done >= total:
        return None if done < total else 0.0
    n = done - first_done
    elapsed = now - first
    if n <= 0 or elapsed <= 0:
        return None
    return (total - done) * elapsed / n


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 100:
        return f"{s} s"
    if s < 6000:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class ProgressBar:
    """A `progress` callback drawing `[#####.....] 12/40  3.1/s  eta 9 s` on a terminal
    (redrawn in place at least every `interval` seconds while `refresh` is called), or a line
    per tenth done (and every LOG_EVERY seconds) otherwise."""

    def __init__(self, stream: TextIO | None = None, width: int = 30, *,
                 clock: Callable[[], float] = time.monotonic, interval: float = 1.0,
                 tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.clock = clock
        self.interval = interval
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = clock()
        self.done = 0
        self.total = 0
        self._first: float | None = None
        self._first_done = 0
        self._drawn: float | None = None
        self._tenth = -1
        self._closed = False
        self._stale = False

    def __call__(self, done: int, total: int, row: dict | None = None) -> None:
        now = self.clock()
        if done > 0 and self._first is None:
            self._first, self._first_done = now, done
        self.done, self.total = done, total
        if done >= total:
            self._draw(now, final=True)
            return
        tenth = done * 10 // max(total, 1)
        if self.tty:
            if self._drawn is None or now - self._drawn >= MIN_REDRAW:
                self._draw(now)
            else:
                self._stale = True  # the next refresh shows it
        elif tenth != self._tenth or self._drawn is None or now - self._drawn >= LOG_EVERY:
            self._tenth = tenth
            self._draw(now)

    def begin(self, total: int) -> None:
        """Show the empty bar for a sweep of `total` combinations (the clock starts now)."""
        self.t0 = self.clock()
        self.total = total
        if self.tty:
            self._draw(self.t0)

    def refresh(self) -> None:
        """Redraw if the line is older than `interval` (the rate and estimate move on)."""
        if self._closed or self.total == 0 or self.done >= self.total:
            return
        now = self.clock()
        due = self.interval if self.tty else LOG_EVERY
        if self.tty and self._stale:
            due = MIN_REDRAW
        if self._drawn is None or now - self._drawn >= due:
            self._draw(now)

    def close(self) -> None:
        """End the line (an interrupted sweep leaves no half-drawn bar behind)."""
        if self._closed:
            return
        self._closed = True
        if self.tty and self._drawn is not None and self.done < self.total:
            print(file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """The bar as it would be drawn at `now` (default: the clock's now)."""
        now = self.clock() if now is None else now
        done, total = self.done, self.total
        filled = self.width * done // max(total, 1)
        if self._first is not None and now > self._first and done > self._first_done:
            rate = f"{(done - self._first_done) / (now - self._first):.1f}/s"
        else:
            rate = "-/s"
        eta = eta_seconds(done, total, self._first, self._first_done, now)
        tail = f"done in {_duration(now - self.t0)}" if done >= total else f"eta {_duration(eta)}"
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}  {rate}  {tail}")

    def _draw(self, now: float, final: bool = False) -> None:
        if self._closed:
            return
        self._drawn = now
        self._stale = False
        end = "\n" if not self.tty or final else ""
        print(("\r" if self.tty else "") + self.line(now) + ("\x1b[K" if self.tty else ""),
              end=end, file=self.stream, flush=True)
        if final:
            self._closed = True
