"""Tick-to-bar sampling: a numba kernel that folds trade ticks into clock-aligned OHLCV bars.

The kernel holds no state of its own: the caller keeps a small float and int state array per
symbol, so sampling resumes exactly where it stopped, in live runs and replays alike. Only closed
bars leave the kernel; the forming bar stays in the state, so nothing downstream can look ahead.
This module does no I/O and never touches trio.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.dtypes import TRADE, UTRADE, ohlc_dtype, tick_dtype
from engine.shm import ShmArray

__all__ = ["Sampler", "parse_timeframe", "format_timeframe", "fold_ticks", "close_until",
           "resample_bars", "period_start", "period_offset"]

# Float state per symbol: open, high, low, close, volume, price*volume of the forming bar, and
# the last close (kept after the bar closes, for flat bars).
_F_OPEN, _F_HIGH, _F_LOW, _F_CLOSE, _F_VOL, _F_PV, _F_LAST = range(7)
# Int state per symbol: forming bar open time (-1: none), trade count, last closed bar time
# (-1: none), late ticks dropped.
_I_BAR, _I_COUNT, _I_CLOSED, _I_LATE = range(4)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
WEEK = 604800
# The epoch fell on a Thursday: periods of whole weeks start on Monday 00:00 UTC, four days on.
_WEEK_OFFSET = 4 * 86400


def period_offset(period: int) -> int:
    """Where periods of `period` seconds start, past multiples of it: weeks on Mondays."""
    return _WEEK_OFFSET if period % WEEK == 0 else 0


def period_start(t: int, period: int) -> int:
    """The start of the UTC wall-clock period of `period` seconds holding time `t`."""
    off = period_offset(period)
    return (t - off) // period * period + off


def parse_timeframe(text: str | int) -> int:
    """Parse `1s`, `5s`, `1m`, `15m`, `1h`, `1d`, `1w` (or plain seconds) into a period in
    seconds."""
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    else:
        raw = str(text).strip().lower()
        unit = raw[-1:] if raw[-1:] in _UNITS else "s"
        number = raw[:-1] if raw[-1:] in _UNITS else raw
        try:
            seconds = int(number) * _UNITS[unit]
        except ValueError:
            raise ValueError(
                f"bad timeframe {text!r}: use a whole number of s, m, h, d or w, like 1s, 5m, "
                "1h, 1d, 1w"
            ) from None
    if seconds <= 0:
        raise ValueError(f"bad timeframe {text!r}: must be at least one second")
    return seconds


def format_timeframe(seconds: int) -> str:
    for unit, size in (("w", WEEK), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@njit(cache=True)
def _emit(out, n, sym, t, o, h, lo, c, v, cnt, wap):
    out[n]["sym"] = sym
    out[n]["time"] = t
    out[n]["open"] = o
    out[n]["high"] = h
    out[n]["low"] = lo
    out[n]["close"] = c
    out[n]["volume"] = v
    out[n]["count"] = cnt
    out[n]["bar_wap"] = wap
    return n + 1


@njit(cache=True)
def _close_bar(fs, ist, s, out, n):
    wap = fs[s, _F_PV] / fs[s, _F_VOL] if fs[s, _F_VOL] > 0 else fs[s, _F_CLOSE]
    n = _emit(out, n, s, ist[s, _I_BAR], fs[s, _F_OPEN], fs[s, _F_HIGH], fs[s, _F_LOW],
              fs[s, _F_CLOSE], fs[s, _F_VOL], ist[s, _I_COUNT], wap)
    ist[s, _I_CLOSED] = ist[s, _I_BAR]
    fs[s, _F_LAST] = fs[s, _F_CLOSE]
    ist[s, _I_BAR] = -1
    return n


@njit(cache=True)
def _flat_until(fs, ist, s, period, until, out, n):
    # Flat bars at the last close for every empty period after the last closed bar, before `until`.
    if ist[s, _I_CLOSED] < 0 or math.isnan(fs[s, _F_LAST]):
        return n
    t = ist[s, _I_CLOSED] + period
    c = fs[s, _F_LAST]
    while t < until and n < out.shape[0]:
        n = _emit(out, n, s, t, c, c, c, c, 0.0, 0, c)
        ist[s, _I_CLOSED] = t
        t += period
    return n


@njit(cache=True)
def fold_ticks(ticks, period, fs, ist, out):
    """Fold tick rows into bars of `period` seconds; return (ticks consumed, bars written to out).

    Trade and utrade ticks move a bar; other tick types are skipped. A trade in a later period
    closes the forming bar (and emits flat bars for empty periods between). A trade older than the
    last closed bar is late: it is counted in the state and never rewrites a closed bar. Stops
    early when `out` is full, leaving the rest of `ticks` (and of a long gap's flat bars) for
    the next call; every call with room in `out` makes progress.
    """
    n = 0
    limit = out.shape[0]
    for i in range(ticks.shape[0]):
        typ = ticks[i]["type"]
        if typ != TRADE and typ != UTRADE:
            continue
        s = ticks[i]["sym"]
        px = ticks[i]["price"]
        sz = ticks[i]["size"]
        bar_t = np.int64(math.floor(ticks[i]["time"] / period)) * period
        cur = ist[s, _I_BAR]
        if cur >= 0 and bar_t > cur:
            if n + 1 > limit:
                return i, n
            n = _close_bar(fs, ist, s, out, n)
            cur = -1
        if cur < 0:
            if ist[s, _I_CLOSED] >= 0 and bar_t <= ist[s, _I_CLOSED]:
                ist[s, _I_LATE] += 1
                continue
            n = _flat_until(fs, ist, s, period, bar_t, out, n)
            if (ist[s, _I_CLOSED] >= 0 and not math.isnan(fs[s, _F_LAST])
                    and ist[s, _I_CLOSED] + period < bar_t):
                # `out` filled before the gap did: the caller empties it and calls again with
                # this tick first, and the flat bars go on from the last one written.
                return i, n
            ist[s, _I_BAR] = bar_t
            ist[s, _I_COUNT] = 0
            fs[s, _F_OPEN] = px
            fs[s, _F_HIGH] = px
            fs[s, _F_LOW] = px
            fs[s, _F_VOL] = 0.0
            fs[s, _F_PV] = 0.0
        elif bar_t < cur:
            # A tick for an earlier, still-forming period cannot happen: bars form one at a time.
            ist[s, _I_LATE] += 1
            continue
        if px > fs[s, _F_HIGH]:
            fs[s, _F_HIGH] = px
        if px < fs[s, _F_LOW]:
            fs[s, _F_LOW] = px
        fs[s, _F_CLOSE] = px
        fs[s, _F_VOL] += sz
        fs[s, _F_PV] += px * sz
        ist[s, _I_COUNT] += 1
    return ticks.shape[0], n


@njit(cache=True)
def close_until(now, period, fs, ist, held, out):
    """Close every bar whose end is at or before `now` (epoch s) and emit flat bars for quiet
    periods that ended by then, except for symbols `held` (their source is down: silence then
    is not a quiet market); return the number of bars written to out."""
    n = 0
    boundary = np.int64(math.floor(now / period)) * period
    for s in range(fs.shape[0]):
        if held[s]:
            continue
        if ist[s, _I_BAR] >= 0 and ist[s, _I_BAR] + period <= now:
            if n + 1 > out.shape[0]:
                break
            n = _close_bar(fs, ist, s, out, n)
        n = _flat_until(fs, ist, s, period, boundary, out, n)
    return n


@njit(cache=True)
def _resample(times, o, h, lo, c, v, cnt, wap, period, offset, out):
    n = -1
    pv = 0.0
    for i in range(times.shape[0]):
        t = ((times[i] - offset) // period) * period + offset
        if n < 0 or t != out[n]["time"]:
            if n >= 0:
                out[n]["bar_wap"] = pv / out[n]["volume"] if out[n]["volume"] > 0 else out[n]["close"]
            n += 1
            out[n]["time"] = t
            out[n]["open"] = o[i]
            out[n]["high"] = h[i]
            out[n]["low"] = lo[i]
            out[n]["volume"] = 0.0
            out[n]["count"] = 0
            pv = 0.0
        if h[i] > out[n]["high"]:
            out[n]["high"] = h[i]
        if lo[i] < out[n]["low"]:
            out[n]["low"] = lo[i]
        out[n]["close"] = c[i]
        out[n]["volume"] += v[i]
        out[n]["count"] += cnt[i]
        pv += (wap[i] if not math.isnan(wap[i]) else c[i]) * v[i]
    if n >= 0:
        out[n]["bar_wap"] = pv / out[n]["volume"] if out[n]["volume"] > 0 else out[n]["close"]
    return n + 1


def resample_bars(bars: np.ndarray, period: int) -> np.ndarray:
    """Aggregate time-ordered bars into bars of `period` seconds (a multiple of theirs)."""
    out = np.zeros(len(bars), dtype=ohlc_dtype)
    if len(bars) == 0:
        return out
    n = _resample(bars["time"], bars["open"], bars["high"], bars["low"], bars["close"],
                  bars["volume"], bars["count"], bars["bar_wap"], period, period_offset(period),
                  out)
    return out[:n]


_bar_out_dtype = np.dtype([("sym", np.int64)] + [(n, ohlc_dtype.fields[n][0]) for n in ohlc_dtype.names
                                                  if n != "index"])


class Sampler:
    """Bars of one period for several symbols, each pushed into its own OHLCV ShmArray as it
    closes. Call `fold` with new tick rows and `close_until` as the clock moves."""

    def __init__(self, period: int, bars: list[ShmArray], out_rows: int = 4096) -> None:
        self.period = int(period)
        self.bars = bars
        n = len(bars)
        self._fs = np.full((n, 7), np.nan)
        self._is = np.full((n, 4), -1, dtype=np.int64)
        self._is[:, _I_LATE] = 0
        self._held = np.zeros(n, dtype=np.bool_)
        self._out = np.zeros(out_rows, dtype=_bar_out_dtype)
        for s, shm in enumerate(bars):
            if len(shm):
                self.seed(s, shm.array[-1])

    def warm(self) -> None:
        """Load (or compile) the kernels now, on scratch state: a feed calls this before its
        stream starts, so its first live batch does not wait the best part of a second."""
        scratch_f, scratch_i = self._fs.copy(), self._is.copy()
        fold_ticks(np.empty(0, dtype=tick_dtype), self.period, scratch_f, scratch_i, self._out)
        close_until(-1.0, self.period, scratch_f, scratch_i, self._held, self._out)

    def seed(self, sym: int, last_bar: np.void) -> None:
        """Continue after a closed bar (the end of backfilled history)."""
        self._is[sym, _I_CLOSED] = (int(last_bar["time"]) // self.period) * self.period
        self._fs[sym, _F_LAST] = float(last_bar["close"])

    def hold(self, sym: int, held: bool = True) -> None:
        """Stop (or resume) closing a symbol's bars by the clock while its source is down; its
        own trades still close bars, so a gap replayed after a reconnect leaves no hole."""
        self._held[sym] = held

    def seed_forming(self, sym: int, bar: np.void) -> None:
        """Continue a bar that history left unfinished, so live trades complete it."""
        self._is[sym, _I_BAR] = int(bar["time"])
        self._is[sym, _I_COUNT] = int(bar["count"])
        f = self._fs[sym]
        f[_F_OPEN], f[_F_HIGH], f[_F_LOW], f[_F_CLOSE] = bar["open"], bar["high"], bar["low"], bar["close"]
        f[_F_VOL] = bar["volume"]
        wap = bar["bar_wap"] if np.isfinite(bar["bar_wap"]) else bar["close"]
        f[_F_PV] = wap * bar["volume"]

    @property
    def late_ticks(self) -> int:
        return int(self._is[:, _I_LATE].sum())

    def forming(self, sym: int) -> dict | None:
        """The forming bar of a symbol (not yet closed), or None."""
        if self._is[sym, _I_BAR] < 0:
            return None
        f = self._fs[sym]
        return {"time": int(self._is[sym, _I_BAR]), "open": f[_F_OPEN], "high": f[_F_HIGH],
                "low": f[_F_LOW], "close": f[_F_CLOSE], "volume": f[_F_VOL],
                "count": int(self._is[sym, _I_COUNT])}

    def _push(self, n: int) -> list[int]:
        rows = self._out[:n]
        closed = []
        for s in np.unique(rows["sym"]):
            mine = rows[rows["sym"] == s]
            bars = np.zeros(len(mine), dtype=ohlc_dtype)
            for name in _bar_out_dtype.names[1:]:
                bars[name] = mine[name]
            shm = self.bars[int(s)]
            shm.push(bars)
            closed.extend([int(s)] * len(mine))
        return closed

    def fold(self, ticks: np.ndarray) -> list[int]:
        """Fold tick rows; return the symbol index of every bar that closed, in order."""
        closed: list[int] = []
        while len(ticks):
            used, n = fold_ticks(ticks, self.period, self._fs, self._is, self._out)
            if n:
                closed.extend(self._push(n))
            ticks = ticks[used:]
        return closed

    def close_until(self, now: float) -> list[int]:
        """Close bars that ended by `now` (epoch s); return the symbols of closed bars."""
        closed: list[int] = []
        while True:
            n = close_until(now, self.period, self._fs, self._is, self._held, self._out)
            if not n:
                return closed
            closed.extend(self._push(n))
            if n < len(self._out):
                return closed

    def next_close(self) -> float | None:
        """Epoch seconds when the next bar closes by the clock, or None if nothing forms yet."""
        bar = self._is[:, _I_BAR]
        closed = self._is[:, _I_CLOSED]
        # A forming bar closes at its end; a quiet symbol's next flat bar ends a period later.
        live = ((bar >= 0) | (closed >= 0)) & ~self._held
        ends = np.where(bar >= 0, bar + self.period, closed + 2 * self.period)[live]
        return float(ends.min()) if len(ends) else None
