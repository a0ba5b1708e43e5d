"""The engine's clocks: the one place that reads the wall clock.

Everything else asks the clock the scheduler hands out (`current_clock()`), so a live run, a
test on trio's MockClock and a replay all see time the same way.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

import trio

__all__ = ["Clock", "LiveClock", "ReplayClock", "current_clock", "use_clock"]


class Clock:
    """Epoch seconds as the engine sees them."""

    def now(self) -> float:
        raise NotImplementedError

    async def sleep_until(self, epoch: float) -> None:
        """Sleep until the clock reads `epoch` seconds."""
        raise NotImplementedError


class LiveClock(Clock):
    """Epoch time carried by trio's clock: real in a live run, virtual under a MockClock.

    The anchor (`start`, epoch seconds) is read from the wall clock once, unless given, so a test
    on an autojump MockClock runs a deterministic, fast-forwarded calendar.
    """

    def __init__(self, start: float | None = None) -> None:
        self._epoch0 = time.time() if start is None else float(start)
        self._trio0: float | None = None

    def _origin(self) -> float:
        if self._trio0 is None:
            self._trio0 = trio.current_time()
        return self._trio0

    def now(self) -> float:
        return self._epoch0 + (trio.current_time() - self._origin())

    def to_trio(self, epoch: float) -> float:
        return self._origin() + (epoch - self._epoch0)

    async def sleep_until(self, epoch: float) -> None:
        await trio.sleep_until(self.to_trio(epoch))


class ReplayClock(Clock):
    """A clock a replay moves forward event by event; it never waits."""

    def __init__(self, start: float = 0.0) -> None:
        self._now: float | None = float(start)
        self._steps: tuple = ()

    def now(self) -> float:
        t = self._now
        if t is None:  # following a replay's steps: the close of the bar counted last
            closes, cell, at = self._steps
            return closes.item(cell[0] - at)
        return t

    def follow(self, closes: Any, cell: list[int], at: int) -> None:
        """Read the time off a replay's steps until `settle`: `closes[cell[0] - at]`, the
        close of the bar the count `cell` reached, where a replay would otherwise set the
        time for every bar. Setting `_now` overrides it until `_now` is None again."""
        self._steps = (closes, cell, at)
        self._now = None

    def settle(self) -> None:
        """Stop following the steps; the time stays where they had it."""
        if self._now is None:
            self._now = self.now()
        self._steps = ()

    def advance(self, epoch: float) -> None:
        if epoch > self.now():
            self._now = float(epoch)

    async def sleep_until(self, epoch: float) -> None:
        self.advance(epoch)
        await trio.lowlevel.checkpoint()


_current: contextvars.ContextVar[Clock] = contextvars.ContextVar("engine_clock")


def current_clock() -> Clock:
    """The clock of the running feed or scheduler (a LiveClock when none was set)."""
    clock = _current.get(None)
    if clock is None:
        clock = LiveClock()
        _current.set(clock)
    return clock


def use_clock(clock: Clock) -> contextvars.Token:
    """Make `clock` the current clock for this task and the tasks it starts afterwards."""
    return _current.set(clock)
