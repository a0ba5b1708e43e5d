"""A feed's history: a provider's `backfill_bars`, paged until it covers the warm-up, resampled
to the feed's timeframe and written before its live bars.

The first call asks for the frames the run was given (`--history`). When the closed bars of the
timeframe it gives are fewer than the warm-up needs, the call is made again into a fresh buffer
with enough frames for the need (at the rows per frame and per bar the first call showed), until
there are enough or the provider has no older history (a call that gives no more rows than the
last). Each call starts from an empty buffer, so a provider only ever does what the spec asks of
one call. The buffer is capped (`HISTORY_CAP` rows at the provider's resolution): a warm-up
that needs more is a clear error, not a run that swaps. Never calls strategy code.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import trio

from engine.dtypes import ohlc_dtype
from engine.provider import Provider
from engine.sampler import Sampler, format_timeframe, resample_bars
from engine.shm import ShmArray
from engine.timefmt import iso

__all__ = ["HISTORY_CAP", "HistoryLoad", "HistoryTooLarge", "load_history"]

log = logging.getLogger("engine.feed")

# Rows per symbol at the provider's resolution (72 bytes each: 288 MB): 200 hourly bars of
# one-second history (720k rows) fit, a year of them does not.
HISTORY_CAP = 4_000_000
# Calls to backfill_bars per symbol at most: each asks for at least twice the frames of the
# last, so this is far beyond any provider that still gives more.
MAX_CALLS = 12


class HistoryTooLarge(ValueError):
    """The warm-up needs more history rows than the buffer may hold."""


@dataclass(frozen=True)
class HistoryLoad:
    """What a symbol's backfill gave: `bars` closed bars of the feed's timeframe (`first`: the
    open time of the oldest, epoch s), from `rows` rows of `period`-second history in `calls`
    calls to backfill_bars (the last for `frames` frames); `need` is the warm-up asked for."""

    symbol: str
    bars: int
    need: int
    rows: int = 0
    period: int | None = None
    frames: int = 0
    calls: int = 0
    first: float | None = None

    @property
    def short(self) -> bool:
        """Whether fewer bars were loaded than the warm-up needs."""
        return self.bars < self.need

    def describe(self, timeframe: int) -> str:
        tf = format_timeframe(timeframe)
        since = f" from {iso(self.first, timeframe)}" if self.first is not None else ""
        need = f" (warm-up needs {self.need})" if self.need else ""
        return f"{self.symbol} {self.bars} bars of {tf}{since}{need}"


def _raw_period(times: np.ndarray) -> int | None:
    diffs = np.diff(times)
    diffs = diffs[diffs > 0]
    return int(diffs.min()) if len(diffs) else None


async def _fetch(provider: Provider, sym: str, raw: ShmArray, count: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.backfill_bars, sym, raw, count)


def _resampled(hist: np.ndarray, period: int, timeframe: int
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """The closed bars of `timeframe` in `hist` and the newest one, still forming, if any."""
    fields = [n for n in ohlc_dtype.names if n in hist.dtype.names]
    base = np.zeros(len(hist), dtype=ohlc_dtype)
    for name in fields:
        base[name] = hist[name]
    out = resample_bars(base, timeframe) if period != timeframe else base
    # The newest resampled bar may cover time after the history ends: it is still forming.
    history_end = int(base["time"][-1]) + period
    if len(out) and int(out["time"][-1]) + timeframe > history_end:
        return out[:-1], out[-1]
    return out, None


def _rows_per_bar(times: np.ndarray, bar_times: np.ndarray, period: int, timeframe: int
                  ) -> float:
    """Rows of history per closed bar, as this history has them: fewer than timeframe / period
    where it has gaps (a market's closed hours). Counted over the whole bars after the first,
    which may be cut short; with too few of those, from the share of periods that have a row."""
    if len(bar_times) >= 3:
        inside = np.count_nonzero((times >= bar_times[1]) & (times < bar_times[-1] + timeframe))
        return max(inside / (len(bar_times) - 1), 1.0)
    slots = (int(times[-1]) + period - int(times[0])) / period
    return max(len(times) / slots * timeframe / period, 1.0)


def _room_after(per_frame: float) -> int:
    # Room for the newest frame's push; older frames are prepended into the rest.
    return math.ceil(2 * per_frame) + 16


async def load_history(provider: Provider, sym: str, *, frames: int, need: int, capacity: int,
                       timeframe: int, bars: ShmArray, sampler: Sampler, s: int,
                       cap: int = HISTORY_CAP) -> HistoryLoad:
    """Backfill `sym` at the provider's resolution, at least `frames` frames and, paging as
    needed, `need` closed bars of `timeframe` seconds; resample and prepend them to `bars`
    (symbol `s` of `sampler`, which continues after them). The first call's buffer holds
    `capacity` rows; a call for the need holds what it needs, up to `cap`."""
    count = max(1, frames)
    size, room_after = capacity, None
    calls, got, period = 0, 0, None
    closed: np.ndarray = np.zeros(0, dtype=ohlc_dtype)
    forming = None
    exhausted = False
    while True:
        start = None if room_after is None else size - room_after
        with ShmArray.create(provider.ohlc_dtype, size, start=start) as raw:
            await _fetch(provider, sym, raw, count)
            calls += 1
            hist = raw.array
            if len(hist) <= got:
                exhausted = True  # no more rows than the last call: nothing older
                break
            got = len(hist)
            period = _raw_period(hist["time"]) or timeframe
            if timeframe % period:
                log.warning("history of %s comes in %d s bars, which do not divide the %d s "
                            "timeframe; starting without history", sym, period, timeframe)
                return HistoryLoad(sym, 0, need, got, period, count, calls)
            closed, forming = _resampled(hist, period, timeframe)
            per_bar = _rows_per_bar(hist["time"], closed["time"], period, timeframe)
        if len(closed) >= need or calls >= MAX_CALLS:
            break
        want = math.ceil((need + 2) * per_bar)  # +2: a first bar cut short, the forming one
        per_frame = got / count
        room_after = min(_room_after(per_frame), cap)
        if want > cap:
            tf = format_timeframe(timeframe)
            raise HistoryTooLarge(
                f"a warm-up of {need} {tf} bars of {sym} needs about {want:,} rows of the "
                f"provider's {period} s history, more than the {cap:,} a symbol may hold: give "
                f"the provider a coarser bar interval, or declare a smaller `warmup`")
        count = max(2 * count, math.ceil(want / per_frame) + 1)
        # The spec: the engine sizes the buffer for the frames it asks for.
        size = min(math.ceil(count * per_frame), cap) + room_after
    out = closed[-bars.room_before:] if bars.room_before < len(closed) else closed
    if forming is not None:
        sampler.seed_forming(s, forming)
    if len(out):
        bars.prepend(out)
        sampler.seed(s, out[-1])
    load = HistoryLoad(sym, len(out), need, got, period, count, calls,
                       float(out["time"][0]) if len(out) else None)
    if load.short:
        why = ("the provider has no older history" if exhausted
               else f"it still gave more after {calls} calls")
        log.warning("history of %s from provider %r: %d closed %s bars (%d rows in %d call(s) "
                    "of backfill_bars, %d frames asked for last), the warm-up needs %d; %s. "
                    "Strategies that need them are called once live bars complete it", sym,
                    provider.name, load.bars, format_timeframe(timeframe), got, calls, count,
                    need, why)
    return load
