"""Trades from a run's fills: positions as lots, closed first in, first out or at average cost.

A fill that moves a position away from zero opens a lot; a fill that brings it back closes lots,
the oldest first (`"fifo"`), or the one lot a position is at average cost (`"average"`). Each
lot, or part of a lot, that a fill closes is one closed trade, carrying its share of the entry
fill's fee and of the exit fill's fee; a fill through zero closes every lot and opens a new one
with the rest. What is still open at the end is listed as open trades valued at the last close.
So the closed trades' P&L plus the open ones' is the account's P&L, fees included.

Works from fills alone (never the account), so the trades of any run can be rebuilt; the bar
ranges a trade spans are scanned by one numba kernel for its excursions.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np
from numba import njit

__all__ = ["LOTS", "TRADE_FIELDS", "build_trades", "excursions", "unrealized_pnl"]

LOTS = ("fifo", "average")

# Every trade's fields, in this order (the JSON and `trades_df` add `*_time_iso` beside each
# time). Prices in the symbol's quote currency, P&L and fees in account currency, times in
# epoch seconds (UTC), `*_pct` in percent.
TRADE_FIELDS = ("symbol", "side", "size", "entry_time", "entry_price", "exit_time",
                "exit_price", "pnl", "gross_pnl", "fees", "return_pct", "bars_held",
                "mae_price", "mfe_price", "mae_pct", "mfe_pct", "open")

_EPS = 1e-12  # a lot this close to empty (relative to its size) is closed: float dust


def build_trades(fills: Iterable, bars: Mapping[str, np.ndarray], lots: str = "fifo"
                 ) -> list[dict]:
    """The trades of `fills` (objects with time, symbol, side, price, size, fee, in the order
    they happened) over `bars` (per symbol, the traded bars: time, high, low, close).

    Closed trades come in the order they closed (lots closed by one fill oldest first), then
    the open ones in the order they opened; an open trade's `exit_price` is the last close it is
    valued at and its `exit_time` None. `lots`: "fifo" or "average" (see the module docstring).
    """
    if lots not in LOTS:
        raise ValueError(f"lots must be one of {', '.join(LOTS)}, got {lots!r}")
    fills = list(fills)
    average = lots == "average"
    symbols = list(bars)
    index = {s: j for j, s in enumerate(symbols)}
    for f in fills:
        if f.symbol not in index:
            index[f.symbol] = len(symbols)
            symbols.append(f.symbol)
    bar_times = [np.asarray(bars[s]["time"], dtype=np.float64) if s in bars else np.zeros(0)
                 for s in symbols]
    fill_bar = _bar_of(fills, index, bar_times)

    # Columns of the trades, built as they close: symbol index, direction (+1 long), size,
    # entry time/price/bar, exit time/price/bar, gross P&L, fees, whether the exit ended at
    # a bar's open (that bar's range is then not part of the trade).
    c_sym: list[int] = []
    c_dir: list[float] = []
    c_size: list[float] = []
    c_et: list[float] = []
    c_ep: list[float] = []
    c_eb: list[int] = []
    c_xt: list[float | None] = []
    c_xp: list[float] = []
    c_xb: list[int] = []
    c_fees: list[float] = []
    c_open: list[bool] = []

    def emit(j: int, lot: list, size: float, time: float | None, price: float, bar: int,
             fee: float, is_open: bool) -> None:
        c_sym.append(j)
        c_dir.append(1.0 if lot[0] > 0 else -1.0)
        c_size.append(size)
        c_et.append(lot[2])
        c_ep.append(lot[1])
        c_eb.append(lot[3])
        c_xt.append(time)
        c_xp.append(price)
        c_xb.append(bar)
        c_fees.append(fee)
        c_open.append(is_open)

    # A lot: [signed units left, entry price, entry time, entry bar, entry fee left].
    book: list[deque] = [deque() for _ in symbols]
    for f, bar in zip(fills, fill_bar, strict=True):
        j = index[f.symbol]
        lots_j = book[j]
        size, price, fee, time = float(f.size), float(f.price), float(f.fee), float(f.time)
        qty = size if f.side == "buy" else -size
        while lots_j and qty and (lots_j[0][0] > 0) != (qty > 0):
            lot = lots_j[0]
            left = abs(lot[0])
            closed = min(left, abs(qty))
            rest = left - closed
            if rest <= _EPS * max(left, 1.0):
                closed, rest = left, 0.0
            entry_fee = lot[4] if rest == 0.0 else lot[4] * closed / left
            emit(j, lot, closed, time, price, bar, entry_fee + fee * min(closed / size, 1.0),
                 False)
            qty += closed if qty < 0 else -closed
            if abs(qty) <= _EPS * max(size, 1.0):
                qty = 0.0
            if rest == 0.0:
                lots_j.popleft()
            else:
                lot[0] = math.copysign(rest, lot[0])
                lot[4] -= entry_fee
        if qty:
            share = fee * abs(qty) / size
            if average and lots_j:
                lot = lots_j[0]
                held = abs(lot[0])
                lot[1] = (lot[1] * held + price * abs(qty)) / (held + abs(qty))
                lot[0] += qty
                lot[4] += share
            else:
                lots_j.append([qty, price, time, bar, share])
    for j, lots_j in enumerate(book):
        times = bar_times[j]
        last_bar = len(times) - 1 if len(times) else 0
        mark = float(bars[symbols[j]]["close"][-1]) if len(times) else math.nan
        for lot in lots_j:
            mark_j = lot[1] if math.isnan(mark) else mark
            emit(j, lot, abs(lot[0]), None, mark_j, max(last_bar, lot[3]), lot[4], True)
    return _records(symbols, bars, bar_times, c_sym, c_dir, c_size, c_et, c_ep, c_eb, c_xt,
                    c_xp, c_xb, c_fees, c_open)


def _bar_of(fills: list, index: dict[str, int], bar_times: list[np.ndarray]) -> list[int]:
    """The index of the bar each fill happened in: the last bar of its symbol opened at or
    before the fill (0 before the first; the last one after the end)."""
    if not fills:
        return []
    sym = np.array([index[f.symbol] for f in fills], dtype=np.int64)
    t = np.array([f.time for f in fills], dtype=np.float64)
    out = np.zeros(len(fills), dtype=np.int64)
    for j, times in enumerate(bar_times):
        mine = sym == j
        if len(times) and mine.any():
            out[mine] = np.clip(np.searchsorted(times, t[mine], side="right") - 1, 0,
                                len(times) - 1)
    return out.tolist()


def _records(symbols, bars, bar_times, c_sym, c_dir, c_size, c_et, c_ep, c_eb, c_xt, c_xp,
             c_xb, c_fees, c_open) -> list[dict]:
    n = len(c_sym)
    if not n:
        return []
    sym = np.array(c_sym, dtype=np.int64)
    direction = np.array(c_dir)
    size = np.array(c_size)
    entry = np.array(c_ep)
    exit_ = np.array(c_xp)
    first = np.array(c_eb, dtype=np.int64)
    last = np.array(c_xb, dtype=np.int64)
    fees = np.array(c_fees)
    gross = size * (exit_ - entry) * direction
    net = gross - fees
    cost = size * entry
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(cost != 0, net / cost * 100.0, 0.0)
    offsets = np.zeros(len(symbols) + 1, dtype=np.int64)
    for j, times in enumerate(bar_times):
        offsets[j + 1] = offsets[j] + len(times)
    every = [np.asarray(bars[s][f], dtype=np.float64) if s in bars else np.zeros(0)
             for f in ("time", "low", "high") for s in symbols]
    k = len(symbols)
    times, lows, highs = (np.concatenate(every[i * k:(i + 1) * k]) for i in range(3))
    # An exit at a bar's open ends the trade there: that bar's range came after it.
    exit_t = np.array([math.nan if t is None else t for t in c_xt])
    at = np.minimum(offsets[sym] + last, max(len(times) - 1, 0))
    at_open = (last > first) & (exit_t <= (times[at] if len(times) else exit_t))
    scan_last = last - at_open
    worst, best = excursions(lows, highs, offsets, sym, first, scan_last, direction, entry, exit_)
    with np.errstate(divide="ignore", invalid="ignore"):
        mae_pct = np.where(entry != 0, (worst / entry - 1.0) * 100.0 * direction, 0.0)
        mfe_pct = np.where(entry != 0, (best / entry - 1.0) * 100.0 * direction, 0.0)
    columns = (
        [symbols[j] for j in c_sym], ["long" if d > 0 else "short" for d in c_dir], c_size,
        c_et, c_ep, c_xt, c_xp, net.tolist(), gross.tolist(), c_fees, ret.tolist(),
        (last - first).tolist(), worst.tolist(), best.tolist(), mae_pct.tolist(),
        mfe_pct.tolist(), c_open)
    return [dict(zip(TRADE_FIELDS, row, strict=True)) for row in zip(*columns, strict=True)]


_BLOCK = 256  # bars per block of the range-extreme index: long trades read blocks, not bars


@njit(cache=True)
def excursions(lows: np.ndarray, highs: np.ndarray, offsets: np.ndarray, sym: np.ndarray,
               first: np.ndarray, last: np.ndarray, direction: np.ndarray, entry: np.ndarray,
               exit_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The worst and best price each trade saw: over the lows and highs of its bars `first`
    to `last` (indices into its symbol's bars, which start at `offsets[sym]` in `lows` and
    `highs`) and its own entry and exit prices. Worst is the lowest for a long (`direction`
    +1) and the highest for a short. Bars are read a block at a time once a range is long."""
    n_bars = len(lows)
    n_blocks = (n_bars + _BLOCK - 1) // _BLOCK
    block_lo = np.full(n_blocks, np.inf)
    block_hi = np.full(n_blocks, -np.inf)
    for k in range(n_bars):
        b = k // _BLOCK
        if lows[k] < block_lo[b]:
            block_lo[b] = lows[k]
        if highs[k] > block_hi[b]:
            block_hi[b] = highs[k]
    n = len(sym)
    worst = np.empty(n)
    best = np.empty(n)
    for i in range(n):
        lo = min(entry[i], exit_[i])
        hi = max(entry[i], exit_[i])
        a = offsets[sym[i]] + first[i]
        b = offsets[sym[i]] + last[i]
        if b >= offsets[sym[i] + 1]:
            b = offsets[sym[i] + 1] - 1
        k = a
        while k <= b:
            if k % _BLOCK == 0 and k + _BLOCK - 1 <= b:
                blk = k // _BLOCK
                lo = min(lo, block_lo[blk])
                hi = max(hi, block_hi[blk])
                k += _BLOCK
            else:
                lo = min(lo, lows[k])
                hi = max(hi, highs[k])
                k += 1
        if direction[i] > 0:
            worst[i], best[i] = lo, hi
        else:
            worst[i], best[i] = hi, lo
    return worst, best


def unrealized_pnl(trades: Iterable[Mapping]) -> float:
    """The P&L of the open trades at their last close, net of the entry fees they paid."""
    return float(math.fsum(t["pnl"] for t in trades if t["open"]))
