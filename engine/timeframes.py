"""Several timeframes in one strategy: higher bars folded from the finest as they close, and the
order in which closed bars reach a strategy's bar callbacks.

A strategy declares `timeframes = ("1h", "1d")` beside its (finest) `timeframe`. Each higher
timeframe's bars are built from the finest bars the strategy sees, one fold per closed finest
bar, in live runs, paper runs and backtests alike, so the three see the same higher bars at the
same moments. Periods are UTC wall-clock periods (a day starts at 00:00 UTC, so a daily bar
carries its trading day's date; a week starts on Monday). A higher bar is visible only once
closed: when a finest bar ending at its period's end closes, or, when the data has a gap (a
weekend, a missing hour), when the first finest bar of a later period arrives, before that
bar's own callbacks.

`BarDispatch` turns "the finest bar of `symbol` closed" into the strategy's calls:
`on_bar(symbol)` or `on_bar(symbol, timeframe)`, or, for a strategy that defines `on_bars`,
`on_bars(symbols)` / `on_bars(symbols, timeframe)` once per time step with every symbol whose
bar closed then (live: once all of its symbols closed that period, or after its `bar_grace`).
Within a step, higher bars closed by a gap come first, then the finest, then higher bars that
the finest completed, each timeframe ascending.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from engine.dtypes import ohlc_dtype
from engine.sampler import format_timeframe, parse_timeframe, period_start

__all__ = ["BarLog", "HigherBars", "BarDispatch", "declared_timeframes", "add_timeframes",
           "fold_history"]


def declared_timeframes(strategy_cls: type, finest: int) -> dict[int, str]:
    """The higher timeframes a strategy class declares, seconds to the label it gave, checked
    against the run's finest period: each must be a whole multiple of it."""
    raw = getattr(strategy_cls, "timeframes", ()) or ()
    if isinstance(raw, str):
        raw = (raw,)
    out: dict[int, str] = {}
    for label in raw:
        try:
            seconds = parse_timeframe(label)
        except ValueError as exc:
            raise ValueError(f"{strategy_cls.__name__}.timeframes: {exc}") from None
        if seconds < finest:
            raise ValueError(f"{strategy_cls.__name__}.timeframes: {label!r} is finer than the "
                             f"run's bars ({format_timeframe(finest)})")
        if seconds % finest:
            raise ValueError(f"{strategy_cls.__name__}.timeframes: {label!r} is not a multiple "
                             f"of the finest timeframe {format_timeframe(finest)}")
        if seconds != finest:
            out.setdefault(seconds, str(label))
    return dict(sorted(out.items()))


class BarLog:
    """Closed bars of one series in memory, addressed by absolute row index like a rolling
    ShmArray (`span`, `rows`, `window`, `size`): when full, the newest half is kept."""

    def __init__(self, size: int) -> None:
        self.size = max(4, int(size))
        self._buf = np.zeros(self.size, dtype=ohlc_dtype)
        self._n = 0  # rows held
        self._base = 0  # absolute index of row 0

    def span(self) -> tuple[int, int]:
        return self._base, self._base + self._n

    def push_one(self, values: tuple) -> None:
        if self._n == self.size:
            keep = self.size // 2
            self._buf[:keep] = self._buf[self._n - keep:self._n]
            self._base += self._n - keep
            self._n = keep
        self._buf[self._n] = values
        self._n += 1

    def rows(self, start: int, stop: int) -> np.ndarray:
        lo, hi = self.span()
        if start < lo or stop > hi or start > stop:
            raise IndexError(f"rows {start}..{stop} are not held (holding {lo}..{hi})")
        return self._buf[start - self._base:stop - self._base]

    def window(self, stop: int) -> np.ndarray:
        return self._buf[:max(0, min(stop - self._base, self._n))]


class HigherBars:
    """One symbol's bars at one higher timeframe: the closed ones in a BarLog, the forming one
    folded from each finest bar as it closes."""

    __slots__ = ("seconds", "finest", "log", "seen", "_f")

    def __init__(self, seconds: int, finest: int, size: int) -> None:
        self.seconds = seconds
        self.finest = finest
        self.log = BarLog(size)
        self.seen = [0]  # the context's visible-bar cell of this series
        self._f: list | None = None  # forming: [time, open, high, low, close, volume, count, pv]

    def _close(self) -> None:
        t, o, h, lo, c, v, n, pv = self._f  # type: ignore[misc]
        wap = pv / v if v > 0 else c
        self.log.push_one((self.log.span()[1], t, o, h, lo, c, v, n, wap))
        self.seen[0] += 1
        self._f = None

    def fold(self, bar: Any) -> tuple[bool, bool]:
        """Fold one closed finest bar (a row of ohlc_dtype). Returns (closed before it: a bar of
        an earlier period that the data's gap left open, closed by this one completing it)."""
        t = int(bar["time"])
        start = period_start(t, self.seconds)
        before = False
        f = self._f
        if f is not None and f[0] != start:
            self._close()
            before = True
            f = None
        o, h, lo, c = float(bar["open"]), float(bar["high"]), float(bar["low"]), float(bar["close"])
        v = float(bar["volume"])
        wap = float(bar["bar_wap"])
        pv = (wap if not math.isnan(wap) else c) * v
        if f is None:
            self._f = [start, o, h, lo, c, v, int(bar["count"]), pv]
        else:
            if h > f[2]:
                f[2] = h
            if lo < f[3]:
                f[3] = lo
            f[4] = c
            f[5] += v
            f[6] += int(bar["count"])
            f[7] += pv
        after = t + self.finest >= start + self.seconds
        if after:
            self._close()
        return before, after


def _takes_timeframe(fn: Callable) -> bool:
    """Whether a bound callback takes a second positional argument (the timeframe)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


class BarDispatch:
    """Which bar callbacks a closed finest bar makes, and when: per symbol, or per time step.

    `closed(symbol)` is told each finest close (after the context made the bar visible) and
    returns the calls due now, as (callback, args) pairs; in grouped mode (`on_bars`) it
    collects a step's symbols until `complete` or `flush`."""

    def __init__(self, strategy: Any, ctx: Any) -> None:
        from engine.strategy import overrides

        cls = type(strategy)
        self.grouped = overrides(cls, "on_bars")
        name = "on_bars" if self.grouped else "on_bar"
        self.active = self.grouped or overrides(cls, "on_bar")
        self.fn = getattr(strategy, name)
        self.with_tf = self.active and _takes_timeframe(self.fn)
        self.ctx = ctx
        self.finest_label = ctx._tf_labels.get(ctx.timeframe) or format_timeframe(ctx.timeframe)
        self.higher: dict[str, list[HigherBars]] = ctx._higher
        self.labels = {hb.seconds: ctx._tf_labels[hb.seconds]
                       for hbs in self.higher.values() for hb in hbs}
        self.symbols = list(ctx.symbols)
        self.grace = float(getattr(cls, "bar_grace", 2.0))
        self.warm = 0  # closed finest bars a symbol needs before its callbacks (engine.warmup)
        # Grouped mode: the step being gathered, its time and what closed in it.
        self.step_time: int | None = None
        self._before: dict[int, list[str]] = {}
        self._finest: list[str] = []
        self._after: dict[int, list[str]] = {}
        self._closed: set[str] = set()  # every symbol that closed the step, warm or not

    @property
    def simple(self) -> bool:
        """Per-symbol `on_bar(symbol)` with no higher timeframe: the replay's fast path."""
        return not self.grouped and not self.higher

    def _fold(self, symbol: str) -> tuple[list[int], list[int]]:
        before: list[int] = []
        after: list[int] = []
        hbs = self.higher.get(symbol)
        if hbs:
            bar = self.ctx.ohlcv(symbol)[-1]
            for hb in hbs:
                b, a = hb.fold(bar)
                if b:
                    before.append(hb.seconds)
                if a:
                    after.append(hb.seconds)
        return before, after

    def closed(self, symbol: str, bar_time: int | None = None) -> list[tuple[Callable, tuple]]:
        """Calls due now that `symbol`'s finest bar (opening at `bar_time`) closed."""
        before, after = self._fold(symbol)
        if not self.active:
            return []
        warm = self.ctx._seen[symbol][0] >= self.warm
        if not self.grouped:
            if not warm:
                return []
            fn, tf = self.fn, self.with_tf
            if not tf:
                return [(fn, (symbol,))]
            return ([(fn, (symbol, self.labels[s])) for s in before]
                    + [(fn, (symbol, self.finest_label))]
                    + [(fn, (symbol, self.labels[s])) for s in after])
        calls: list[tuple[Callable, tuple]] = []
        if bar_time is None:
            bar_time = int(self.ctx.ohlcv(symbol)["time"][-1])
        if self.step_time is not None and bar_time != self.step_time:
            calls = self.flush()
        self.step_time = bar_time
        self._closed.add(symbol)
        if not warm:
            return calls
        for s in before:
            self._before.setdefault(s, []).append(symbol)
        self._finest.append(symbol)
        for s in after:
            self._after.setdefault(s, []).append(symbol)
        return calls

    @property
    def pending(self) -> bool:
        return self.step_time is not None

    @property
    def complete(self) -> bool:
        """Every symbol of the run closed the step being gathered."""
        return self.step_time is not None and len(self._closed) >= len(self.symbols)

    def flush(self) -> list[tuple[Callable, tuple]]:
        """The grouped calls of the step gathered so far (and forget it)."""
        if self.step_time is None:
            return []
        if not self._finest:
            self.step_time = None
            self._closed = set()
            return []
        fn = self.fn
        order = {s: i for i, s in enumerate(self.symbols)}

        def ordered(names: Iterable[str]) -> list[str]:
            return sorted(set(names), key=order.__getitem__)

        calls: list[tuple[Callable, tuple]] = []
        if self.with_tf:
            calls += [(fn, (ordered(v), self.labels[s])) for s, v in sorted(self._before.items())]
            calls.append((fn, (ordered(self._finest), self.finest_label)))
            calls += [(fn, (ordered(v), self.labels[s])) for s, v in sorted(self._after.items())]
        else:
            calls.append((fn, (ordered(self._finest),)))
        self.step_time = None
        self._before, self._finest, self._after, self._closed = {}, [], {}, set()
        return calls


def add_timeframes(ctx: Any, higher: dict[int, str], size_of: Callable[[str], int],
                   finest_label: str) -> None:
    """Give `ctx` a series per symbol and higher timeframe (`higher`: seconds to label), sized
    from the finest series' `size_of(symbol)` rows."""
    ctx._tf_labels = {ctx.timeframe: finest_label, **higher}
    for sym in ctx.symbols:
        hbs = []
        n = size_of(sym)
        for seconds in higher:
            # Data with gaps (trading days, sessions) has more higher bars than n / ratio:
            # up to a million rows hold one per finest bar, more hold four times n / ratio.
            size = n if n <= 1 << 20 else max(1 << 16, n // (seconds // ctx.timeframe) * 4)
            hb = HigherBars(seconds, ctx.timeframe, size)
            key = (sym, seconds)
            ctx._bars[key] = hb.log
            ctx._origin[key] = 0
            ctx._seen[key] = hb.seen
            hbs.append(hb)
        if hbs:  # none: the replay's fast path stays open (`BarDispatch.simple`)
            ctx._higher[sym] = hbs


def fold_history(ctx: Any, symbols: Sequence[str]) -> None:
    """Fold the finest bars already visible at the start (warm history) into the higher
    timeframes, without calls."""
    for sym in symbols:
        hbs = ctx._higher.get(sym)
        if not hbs:
            continue
        for bar in ctx.ohlcv(sym):
            for hb in hbs:
                hb.fold(bar)
