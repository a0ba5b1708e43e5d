"""Trades from a run's fills: positions as lots, closed first in, first out or at average cost.

A fill that moves a position away from zero opens a lot; a fill that brings it back closes lots,
the oldest first (`"fifo"`), or the one lot a position is at average cost (`"average"`). Each
lot, or part of a lot, that a fill closes is one closed trade, carrying its share of the entry
fill's fee and of the exit fill's fee; a fill through zero closes every lot and opens a new one
with the rest. What is still open at the end is listed as open trades valued at the last close.
So the closed trades' P&L plus the open ones' is the account's P&L, fees included.

Works from fills alone (never the account), so the trades of any run can be rebuilt. Two pure
numba kernels do the work, `match_lots` (fills into lots and trades) and `excursions` (the bar
ranges trades span); `build_trades` gathers the fills and shapes the records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from numba import njit

__all__ = ["LOTS", "TRADE_FIELDS", "build_trades", "match_lots", "excursions", "unrealized_pnl"]

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
    fills = fills if isinstance(fills, list) else list(fills)
    symbols = list(bars)
    index = {s: j for j, s in enumerate(symbols)}
    for f in fills:
        if f.symbol not in index:
            index[f.symbol] = len(symbols)
            symbols.append(f.symbol)
    columns = {f: [np.asarray(bars[s][f], dtype=np.float64) if s in bars else np.zeros(0)
                   for s in symbols] for f in ("time", "low", "high")}
    offsets = np.zeros(len(symbols) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) for t in columns["time"]])
    times, lows, highs = (c[0] if len(c) == 1 else np.concatenate(c)
                          for c in columns.values())
    marks = np.array([float(bars[s]["close"][-1]) if s in bars and len(bars[s]) else math.nan
                      for s in symbols])
    # One pass over the fills, then whole columns.
    numbers = np.array([(index[f.symbol], f.size if f.side == "buy" else -f.size, f.price,
                         f.fee, f.time) for f in fills], dtype=np.float64).reshape(-1, 5)
    sym = numbers[:, 0].astype(np.int64)
    qty, price, fee, when = (np.ascontiguousarray(numbers[:, i]) for i in range(1, 5))
    (t_sym, t_dir, t_size, t_et, t_ep, t_eb, t_xt, t_xp, t_xb, t_fees, t_open) = match_lots(
        sym, qty, price, fee, when, times, offsets, marks, lots == "average")
    # An exit at a bar's open ends the trade there: that bar's range came after it.
    at_open = (t_xb > t_eb) & (t_xt <= times[np.minimum(offsets[t_sym] + t_xb,
                                                        max(len(times) - 1, 0))]
                               if len(times) else np.zeros(len(t_sym), dtype=np.bool_))
    worst, best = excursions(lows, highs, offsets, t_sym, t_eb, t_xb - at_open, t_dir, t_ep,
                             t_xp)
    gross = t_size * (t_xp - t_ep) * t_dir
    net = gross - t_fees
    cost = t_size * t_ep
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(cost != 0, net / cost * 100.0, 0.0)
        mae_pct = np.where(t_ep != 0, (worst / t_ep - 1.0) * 100.0 * t_dir, 0.0)
        mfe_pct = np.where(t_ep != 0, (best / t_ep - 1.0) * 100.0 * t_dir, 0.0)
    exit_time = [None if o else t for t, o in zip(t_xt.tolist(), t_open.tolist(), strict=True)]
    return [{"symbol": symbols[j], "side": "long" if d > 0 else "short", "size": size,
             "entry_time": et, "entry_price": ep, "exit_time": xt, "exit_price": xp,
             "pnl": pnl, "gross_pnl": g, "fees": fe, "return_pct": r, "bars_held": held,
             "mae_price": lo, "mfe_price": hi, "mae_pct": lo_pct, "mfe_pct": hi_pct,
             "open": o}
            for j, d, size, et, ep, xt, xp, pnl, g, fe, r, held, lo, hi, lo_pct, hi_pct, o
            in zip(t_sym.tolist(), t_dir.tolist(), t_size.tolist(), t_et.tolist(),
                   t_ep.tolist(), exit_time, t_xp.tolist(), net.tolist(), gross.tolist(),
                   t_fees.tolist(), ret.tolist(), (t_xb - t_eb).tolist(), worst.tolist(),
                   best.tolist(), mae_pct.tolist(), mfe_pct.tolist(), t_open.tolist(),
                   strict=True)]


@njit(cache=True)
def match_lots(sym: np.ndarray, qty: np.ndarray, price: np.ndarray, fee: np.ndarray,
               time: np.ndarray, bar_times: np.ndarray, offsets: np.ndarray, marks: np.ndarray,
               average: bool) -> tuple:
    """Match fills (symbol index, signed units, price, fee, time in epoch s) into lots and
    return the trades as columns: symbol, direction (+1 long), units, entry time, price and
    bar, exit time, price and bar, fees, open. A fill's bar is the last of its symbol's bars
    (times `bar_times[offsets[s]:offsets[s + 1]]`) opened at or before it; open trades exit at
    `marks[s]` (NaN: at their entry price) on the symbol's last bar."""
    n = len(sym)
    n_sym = len(offsets) - 1
    # Lots: one queue per symbol, linked oldest to newest through `l_next`.
    l_sym = np.zeros(n, dtype=np.int64)
    l_qty = np.zeros(n)
    l_px = np.zeros(n)
    l_t = np.zeros(n)
    l_bar = np.zeros(n, dtype=np.int64)
    l_fee = np.zeros(n)
    l_next = np.full(n, -1, dtype=np.int64)
    alive = np.zeros(n, dtype=np.bool_)
    head = np.full(n_sym, -1, dtype=np.int64)
    tail = np.full(n_sym, -1, dtype=np.int64)
    n_lots = 0
    # Each fill closes at most one lot in part; every other close ends a lot: 2n bounds them.
    cap = 2 * n + 1
    o_sym = np.zeros(cap, dtype=np.int64)
    o_dir = np.zeros(cap)
    o_size = np.zeros(cap)
    o_et = np.zeros(cap)
    o_ep = np.zeros(cap)
    o_eb = np.zeros(cap, dtype=np.int64)
    o_xt = np.zeros(cap)
    o_xp = np.zeros(cap)
    o_xb = np.zeros(cap, dtype=np.int64)
    o_fee = np.zeros(cap)
    o_open = np.zeros(cap, dtype=np.bool_)
    m = 0
    for i in range(n):
        j = sym[i]
        q = qty[i]
        size = abs(q)
        lo, hi = offsets[j], offsets[j + 1]
        bar = np.searchsorted(bar_times[lo:hi], time[i], side="right") - 1
        bar = min(max(bar, 0), max(hi - lo - 1, 0))
        while head[j] >= 0 and q != 0.0 and (l_qty[head[j]] > 0) != (q > 0):
            h = head[j]
            left = abs(l_qty[h])
            closed = min(left, abs(q))
            rest = left - closed
            if rest <= _EPS * max(left, 1.0):
                closed = left
                rest = 0.0
            entry_fee = l_fee[h] if rest == 0.0 else l_fee[h] * closed / left
            o_sym[m] = j
            o_dir[m] = 1.0 if l_qty[h] > 0 else -1.0
            o_size[m] = closed
            o_et[m] = l_t[h]
            o_ep[m] = l_px[h]
            o_eb[m] = l_bar[h]
            o_xt[m] = time[i]
            o_xp[m] = price[i]
            o_xb[m] = bar
            o_fee[m] = entry_fee + fee[i] * min(closed / size, 1.0)
            m += 1
            q = q + closed if q < 0 else q - closed
            if abs(q) <= _EPS * max(size, 1.0):
                q = 0.0
            if rest == 0.0:
                alive[h] = False
                head[j] = l_next[h]
                if head[j] < 0:
                    tail[j] = -1
            else:
                l_qty[h] = rest if l_qty[h] > 0 else -rest
                l_fee[h] -= entry_fee
        if q != 0.0:
            share = fee[i] * abs(q) / size
            h = head[j]
            if average and h >= 0:
                held = abs(l_qty[h])
                l_px[h] = (l_px[h] * held + price[i] * abs(q)) / (held + abs(q))
                l_qty[h] += q
                l_fee[h] += share
            else:
                k = n_lots
                n_lots += 1
                l_sym[k] = j
                l_qty[k] = q
                l_px[k] = price[i]
                l_t[k] = time[i]
                l_bar[k] = bar
                l_fee[k] = share
                alive[k] = True
                if tail[j] >= 0:
                    l_next[tail[j]] = k
                else:
                    head[j] = k
                tail[j] = k
    for k in range(n_lots):
        if not alive[k]:
            continue
        j = l_sym[k]
        o_sym[m] = j
        o_dir[m] = 1.0 if l_qty[k] > 0 else -1.0
        o_size[m] = abs(l_qty[k])
        o_et[m] = l_t[k]
        o_ep[m] = l_px[k]
        o_eb[m] = l_bar[k]
        o_xt[m] = np.nan
        o_xp[m] = l_px[k] if np.isnan(marks[j]) else marks[j]
        o_xb[m] = max(offsets[j + 1] - offsets[j] - 1, l_bar[k], 0)
        o_fee[m] = l_fee[k]
        o_open[m] = True
        m += 1
    return (o_sym[:m], o_dir[:m], o_size[:m], o_et[:m], o_ep[:m], o_eb[:m], o_xt[:m],
            o_xp[:m], o_xb[:m], o_fee[:m], o_open[:m])


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
