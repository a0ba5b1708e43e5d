"""Turn bars into trade quotes and replay them, several files merged by time, on trio's clock.

Each bar becomes four trades of a quarter of its volume: the open at the bar's start, then the
extreme nearer the open (on a tie, the one away from the close), then the other extreme, then the
close just before the bar ends; the extremes fall at a third and two thirds of the bar. The three
trades after the open say `"path": True`: the price moved continuously to them from the trade
before. The VWAP
of these trades is (open+high+low+close)/4, the `bar_wap` that backfill writes for the same bar.
Pacing reads only `trio.current_time()`, never the wall clock, so a MockClock drives it in tests.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import trio

from engine.datafiles import History

__all__ = ["bar_ticks", "first_quote", "replay"]

# Seconds before the bar's end at which its close trades: inside the bar for any bar of >= 1 s.
CLOSE_BEFORE_END = 0.001
_CHUNK = 4096  # bars synthesized at a time, so a long file never holds all its ticks at once


def bar_ticks(bars: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return trade times (s) and prices, both (n, 4), and sizes (n,) for bars ending at `ends`."""
    t = bars["time"].astype(np.float64)
    o, h, low, c = bars["open"], bars["high"], bars["low"], bars["close"]
    up, down = h - o, o - low
    high_first = (up < down) | ((up == down) & (c < o))
    prices = np.stack([o, np.where(high_first, h, low), np.where(high_first, low, h), c], axis=1)
    length = ends - t
    times = np.stack([t, t + length / 3, t + 2 * length / 3, ends - CLOSE_BEFORE_END], axis=1)
    return times, prices, bars["volume"] / 4


def _bar_ends(history: History) -> np.ndarray:
    t = history.bars["time"]
    nxt = np.append(t[1:], t[-1] + history.period)
    # A gap (weekend, holiday) does not stretch a bar: it lasts at most the typical period.
    return np.minimum(nxt, t + history.period).astype(np.float64)


def _trades(k: int, history: History) -> Iterator[tuple[float, int, int, float, float]]:
    ends = _bar_ends(history)
    seq = 0
    for s in range(0, len(history.bars), _CHUNK):
        times, prices, sizes = bar_ticks(history.bars[s : s + _CHUNK], ends[s : s + _CHUNK])
        for t, p, size in zip(
            times.ravel().tolist(),
            prices.ravel().tolist(),
            np.repeat(sizes, 4).tolist(),
            strict=True,
        ):
            yield t, k, seq, p, size
            seq += 1


def first_quote(symbol: str, history: History) -> dict[str, Any]:
    """The snapshot handed to `started`: the first bar's open as `last`, with no tick.

    The open's trade itself is the first message replay sends, so it is counted exactly once
    whether or not the engine records the ticks of first quotes.
    """
    bar = history.bars[0]
    return {"symbol": symbol, "last": float(bar["open"]), "time": float(bar["time"]), "ticks": []}


async def replay(
    send_chan: trio.abc.SendChannel, streams: Sequence[tuple[str, History]], speed: float
) -> None:
    """Send every synthesized trade of `streams` in time order, `speed` data seconds a second,
    then for each stream a quote without ticks whose `time` is where its data ends.

    `speed` is math.inf to send as fast as the receiver takes them. Returns when all are sent.
    """
    merged = heapq.merge(*(_trades(k, history) for k, (_, history) in enumerate(streams)))
    t0 = min(float(history.bars["time"][0]) for _, history in streams)
    start = trio.current_time()
    for t, k, seq, price, size in merged:
        if math.isinf(speed):
            await trio.lowlevel.checkpoint()
        else:
            await trio.sleep_until(start + (t - t0) / speed)
        msg = {
            "symbol": streams[k][0],
            "last": price,
            "time": t,
            "ticks": [{"type": "trade", "price": price, "size": size, "time": t}],
        }
        if seq % 4:
            # Inside the bar the price went through every level between two of its trades (the
            # bar's range says so): a paper broker fills stops and limits crossed on the way at
            # their own price, as a backtest does, not at the trade that crossed them.
            msg["path"] = True
        await send_chan.send(msg)
    # The data ends where each file's last bar ends: one quote without ticks says so, so an
    # engine closing bars by data time closes the last bar too.
    ends = sorted((float(_bar_ends(history)[-1]), k) for k, (_, history) in enumerate(streams))
    for end, k in ends:
        if not math.isinf(speed):
            await trio.sleep_until(start + (end - t0) / speed)
        sym, history = streams[k]
        last = float(history.bars["close"][-1])
        await send_chan.send({"symbol": sym, "last": last, "time": end, "ticks": []})
