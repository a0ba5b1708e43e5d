"""The equity curve of a replay: one numba pass over its steps and fills, kept as one float per
bar (`Curve`) until someone reads it as the result's structured array."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["equity_curve", "equity_one", "Curve", "CURVE_DTYPE"]

# The result's curve: each bar's open time (epoch s), equity at its close, drawdown in percent.
CURVE_DTYPE = np.dtype([("time", np.int64), ("equity", np.float64), ("drawdown_pct", np.float64)])


class Curve:
    """An equity curve as its bars' times (a view of the bars) and one float per bar, built
    into the `CURVE_DTYPE` array (drawdowns included) the first time it is read."""

    def __init__(self, times: np.ndarray, equity: np.ndarray) -> None:
        self.times = times
        self.equity = equity

    def build(self) -> np.ndarray:
        from engine.backtests.metrics import drawdowns

        curve = np.zeros(len(self.equity), dtype=CURVE_DTYPE)
        curve["time"] = self.times
        curve["equity"] = self.equity
        curve["drawdown_pct"] = drawdowns(self.equity)
        return curve


@njit(cache=True)
def equity_curve(which: np.ndarray, closes: np.ndarray, n_sym: int, fill_step: np.ndarray,
                 fill_sym: np.ndarray, fill_qty: np.ndarray, fill_price: np.ndarray,
                 fill_fee: np.ndarray, cash: float, keep: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Equity at the close of each step kept (`keep[k]`: the last step of its time) and whether
    a position was open then.

    Step k closes a bar of symbol `which[k]` at `closes[k]`; fills are sorted by step and
    booked with the account's own arithmetic (cash -= qty * price + fee), so the curve ends on
    the account's cash to the last bit. A symbol is valued at its latest close (not at all
    before its first bar); the symbols are summed only at the steps kept."""
    n = len(which)
    n_keep = 0
    for k in range(n):
        if keep[k]:
            n_keep += 1
    equity = np.empty(n_keep)
    exposed = np.zeros(n_keep, dtype=np.bool_)
    pos = np.zeros(n_sym)
    delta = np.zeros(n_sym)
    last = np.full(n_sym, np.nan)
    running = cash
    f = 0
    out = 0
    n_fills = len(fill_step)
    for k in range(n):
        if f < n_fills and fill_step[f] == k:
            delta[:] = 0.0
            while f < n_fills and fill_step[f] == k:
                running -= fill_qty[f] * fill_price[f] + fill_fee[f]
                delta[fill_sym[f]] += fill_qty[f]
                f += 1
            for j in range(n_sym):
                pos[j] += delta[j]
        last[which[k]] = closes[k]
        if not keep[k]:
            continue
        value = 0.0
        for j in range(n_sym):
            if pos[j] != 0.0:
                exposed[out] = True
            if not math.isnan(last[j]):
                value += pos[j] * last[j]
        equity[out] = running + value
        out += 1
    return equity, exposed


@njit(cache=True)
def equity_one(closes: np.ndarray, fill_step: np.ndarray, fill_qty: np.ndarray,
               fill_price: np.ndarray, fill_fee: np.ndarray, cash: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """`equity_curve` of one symbol (every step one of its bars): the same arithmetic, without
    a step-to-symbol array; `closes` may be a strided view of the bars."""
    n = len(closes)
    equity = np.empty(n)
    exposed = np.zeros(n, dtype=np.bool_)
    pos = 0.0
    running = cash
    f = 0
    n_fills = len(fill_step)
    for k in range(n):
        if f < n_fills and fill_step[f] == k:
            delta = 0.0
            while f < n_fills and fill_step[f] == k:
                running -= fill_qty[f] * fill_price[f] + fill_fee[f]
                delta += fill_qty[f]
                f += 1
            pos += delta
        exposed[k] = pos != 0.0
        c = closes[k]
        value = 0.0
        if not math.isnan(c):
            value += pos * c
        equity[k] = running + value
    return equity, exposed
