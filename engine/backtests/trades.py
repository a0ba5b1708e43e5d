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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numba import njit

__all__ = ["LOTS", "TRADE_FIELDS", "Trades", "build_trades", "trade_table", "match_lots", "excursions", "unrealized_pnl"]

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
    # One pass over the fills, then whole columns.
    numbers = np.array([(index[f.symbol], f.size if f.side == "buy" else -f.size, f.price,
                         f.fee, f.time) for f in fills], dtype=np.float64).reshape(-1, 5)
    sym = numbers[:, 0].astype(np.int64)
    qty, price, fee, when = (np.ascontiguousarray(numbers[:, i]) for i in range(1, 5))
    return list(trade_table(sym, qty, price, fee, when, symbols, bars, lots))


def trade_table(sym: np.ndarray, qty: np.ndarray, price: np.ndarray, fee: np.ndarray,
                when: np.ndarray, symbols: list[str], bars: Mapping[str, np.ndarray],
                lots: str = "fifo") -> Trades:
    """`build_trades` from fills as columns: symbol index (into `symbols`, which start with
    those of `bars`), signed units, price, fee and time; the trades as columns (`Trades`)."""
    if lots not in LOTS:
        raise ValueError(f"lots must be one of {', '.join(LOTS)}, got {lots!r}")
    # Views of the bars where they are one symbol's (times stay int64: the kernels compare
    # them with float times exactly as float64 copies would compare).
    columns = {f: [np.asarray(bars[s][f], dtype=np.int64 if f == "time" else np.float64)
                   if s in bars else np.zeros(0, dtype=np.int64 if f == "time" else np.float64)
                   for s in symbols] for f in ("time", "low", "high")}
    offsets = np.zeros(len(symbols) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(t) for t in columns["time"]])
    times, lows, highs = (c[0] if len(c) == 1 else np.concatenate(c)
                          for c in columns.values())
    marks = np.array([float(bars[s]["close"][-1]) if s in bars and len(bars[s]) else math.nan
                      for s in symbols])
    matched = match_lots(
        np.ascontiguousarray(sym, dtype=np.int64), np.ascontiguousarray(qty),
        np.ascontiguousarray(price), np.ascontiguousarray(fee), np.ascontiguousarray(when),
        times, offsets, marks, lots == "average")
    # The kernel's arrays are sized for the most trades the fills could make: keep the trades.
    (t_sym, t_dir, t_size, t_et, t_ep, t_eb, t_xt, t_xp, t_xb, t_fees, t_open) = (
        a.copy() for a in matched)
    del matched
    # An exit at a bar's open ends the trade there: that bar's range came after it.
    at_open = (t_xb > t_eb) & (t_xt <= times[np.minimum(offsets[t_sym] + t_xb,
                                                        max(len(times) - 1, 0))]
                               if len(times) else np.zeros(len(t_sym), dtype=np.bool_))
    worst, best = excursions(lows, highs, offsets, t_sym, t_eb, t_xb - at_open, t_dir, t_ep,
                             t_xp)
    del times, lows, highs
    gross = t_size * (t_xp - t_ep) * t_dir
    net = gross - t_fees
    cost = t_size * t_ep
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(cost != 0, net / cost * 100.0, 0.0)
        mae_pct = np.where(t_ep != 0, (worst / t_ep - 1.0) * 100.0 * t_dir, 0.0)
        mfe_pct = np.where(t_ep != 0, (best / t_ep - 1.0) * 100.0 * t_dir, 0.0)
    return Trades(symbols, {
        "symbol": t_sym, "side": t_dir, "size": t_size, "entry_time": t_et,
        "entry_price": t_ep, "exit_time": t_xt, "exit_price": t_xp, "pnl": net,
        "gross_pnl": gross, "fees": t_fees, "return_pct": ret, "bars_held": t_xb - t_eb,
        "mae_price": worst, "mfe_price": best, "mae_pct": mae_pct, "mfe_pct": mfe_pct,
        "open": t_open})


class Trades(Sequence):
    """A run's trades as columns (numpy arrays by `TRADE_FIELDS` name: `symbol` an index into
    `symbols`, `side` +1 long / -1 short, `exit_time` NaN while open), read as a list of dicts:
    `trades[i]`, iteration and slices build the dicts when read, so a run with a million trades
    keeps a few arrays, not a million dicts. Equal to a list of the same dicts."""

    def __init__(self, symbols: list[str], columns: dict[str, np.ndarray]) -> None:
        self.symbols = symbols
        self.columns = columns

    def __len__(self) -> int:
        return len(self.columns["size"])

    def lists(self, lo: int = 0, hi: int | None = None) -> dict[str, list]:
        """Trades lo..hi as lists by field, the values the dicts hold."""
        c = {k: v[lo:hi].tolist() for k, v in self.columns.items()}
        c["symbol"] = [self.symbols[j] for j in c["symbol"]]
        c["side"] = ["long" if d > 0 else "short" for d in c["side"]]
        c["exit_time"] = [None if o else t for t, o in zip(c["exit_time"], c["open"],
                                                           strict=True)]
        return c

    def _rows(self, lo: int, hi: int) -> list[dict]:
        c = self.lists(lo, hi)
        return [dict(zip(TRADE_FIELDS, row, strict=True))
                for row in zip(*(c[k] for k in TRADE_FIELDS), strict=True)]

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step == 1:
                return self._rows(lo, max(lo, hi))
            return [self[k] for k in range(lo, hi, step)]
        n = len(self)
        k = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= k < n:
            raise IndexError(f"trade {i} of {n}")
        return self._rows(k, k + 1)[0]

    def __iter__(self) -> Iterator[dict]:
        step = 65536  # dicts built a block at a time
        for lo in range(0, len(self), step):
            yield from self._rows(lo, lo + step)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Any) -> list[dict]:
        return list(self) + list(other)

    def __repr__(self) -> str:
        return f"Trades({len(self)} trades)"


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
