"""Backtest statistics from an equity curve and a trade list: returns, risk, drawdowns, trades.

Pure functions of arrays; no I/O. Annualization follows the calendar of the data: per-day
returns (the last equity of each UTC day), 252 periods a year when the data has no weekend
days (exchange calendars) and 365 when it trades every day (crypto).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["compute_stats", "drawdowns", "round_trips"]

_YEAR = 365.25 * 86400


def drawdowns(equity: np.ndarray) -> np.ndarray:
    """Drawdown of each point from the running peak, as a percent (<= 0)."""
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, (equity / peak - 1.0) * 100.0, 0.0)


def _max_duration(times: np.ndarray, dd: np.ndarray) -> float:
    """Longest time under water, in seconds: from the peak before a drawdown to the point the
    equity regains it (or to the end if it never does)."""
    if not len(times):
        return 0.0
    t = times.astype(np.float64)
    at_peak = dd >= 0
    # The time of the latest peak at or before each point (the first point counts as one).
    peak_t = np.maximum.accumulate(np.where(at_peak, t, t[0]))
    regained = np.flatnonzero(at_peak[1:] & ~at_peak[:-1]) + 1
    longest = float((t[regained] - peak_t[regained - 1]).max()) if len(regained) else 0.0
    if not at_peak[-1]:
        longest = max(longest, float(t[-1] - peak_t[-1]))
    return longest


def _daily(times: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    days = times // 86400
    last = np.r_[days[1:] != days[:-1], True]
    return days[last], equity[last]


class _Open:
    """A trade being built by round_trips."""

    __slots__ = ("symbol", "side", "pos", "avg", "size", "entry_time", "fees", "pnl",
                 "entry_value", "first_price", "one_price")

    def __init__(self, symbol: str, side: str, time: float, price: float) -> None:
        self.symbol, self.side, self.entry_time = symbol, side, time
        self.pos = self.avg = self.size = self.fees = self.pnl = self.entry_value = 0.0
        self.first_price, self.one_price = price, True


def round_trips(fills: list, closes: dict[str, float]) -> list[dict]:
    """Trades from fills: a trade opens when a position leaves zero and closes when it returns
    to zero or flips; a flip closes one trade and opens the next at the fill price. Still-open
    trades are valued at the last close and marked `open`."""
    trades: list[dict] = []
    state: dict[str, _Open] = {}
    copysign = math.copysign
    for f in fills:
        size, price, fee, symbol = f.size, f.price, f.fee, f.symbol
        qty = size if f.side == "buy" else -size
        st = state.get(symbol)
        while qty:
            if st is None:
                st = state[symbol] = _Open(symbol, "long" if qty > 0 else "short", f.time, price)
            pos = st.pos
            if pos == 0 or (pos > 0) == (qty > 0):
                new = pos + qty
                st.avg = (st.avg * abs(pos) + price * abs(qty)) / abs(new)
                st.pos = new
                st.size = max(st.size, abs(new))
                st.entry_value += abs(qty) * price
                if price != st.first_price:
                    st.one_price = False
                st.fees += fee * (abs(qty) / size)
                qty = 0.0
            else:
                closed = min(abs(qty), abs(pos))
                sign = 1.0 if pos > 0 else -1.0
                st.pnl += closed * (price - st.avg) * sign
                st.fees += fee * (closed / size)
                st.pos = pos + copysign(closed, qty)
                qty -= copysign(closed, qty)
                if abs(st.pos) <= 1e-12 * max(1.0, st.size):
                    trades.append(_close(st, f.time, price))
                    del state[symbol]
                    st = None
    for st in state.values():
        price = closes.get(st.symbol, st.avg)
        st.pnl += st.pos * (price - st.avg)
        trades.append(dict(_close(st, None, price), open=True))
    return trades


def _close(st: _Open, time: float | None, price: float) -> dict:
    net = st.pnl - st.fees
    return {
        "symbol": st.symbol, "side": st.side, "size": st.size,
        "entry_time": st.entry_time,
        # One entry price is reported as filled; several as their size-weighted mean.
        "entry_price": st.first_price if st.one_price else st.entry_value / st.size,
        "exit_time": time, "exit_price": price,
        "pnl": net, "gross_pnl": st.pnl, "fees": st.fees,
        "return_pct": net / st.entry_value * 100.0 if st.entry_value else 0.0,
        "open": False,
    }


def compute_stats(times: np.ndarray, equity: np.ndarray, exposure: np.ndarray, trades: list,
                  fees: float, cash: float) -> dict:
    """The statistics of a run: see the module docstring for annualization."""
    final = float(equity[-1]) if len(equity) else cash
    dd = drawdowns(equity) if len(equity) else np.zeros(0)
    years = (times[-1] - times[0]) / _YEAR if len(times) > 1 else 0.0
    total = final / cash - 1.0
    cagr = (final / cash) ** (1.0 / years) - 1.0 if years > 0 and final > 0 else float("nan")
    days, daily_eq = _daily(times, equity) if len(times) else (np.zeros(0), np.zeros(0))
    rets = np.diff(daily_eq) / daily_eq[:-1] if len(daily_eq) > 1 else np.zeros(0)
    weekend = ((days + 4) % 7 >= 5).any() if len(days) else False  # 1970-01-01 was a Thursday
    per_year = 365 if weekend else 252
    vol = float(np.std(rets, ddof=1) * math.sqrt(per_year)) if len(rets) > 1 else float("nan")
    mean = float(np.mean(rets)) if len(rets) else float("nan")
    sharpe = mean * per_year / vol if vol and vol == vol else float("nan")
    downside = rets[rets < 0]
    dvol = float(math.sqrt(np.mean(downside ** 2)) * math.sqrt(per_year)) if len(downside) \
        else float("nan")
    sortino = mean * per_year / dvol if dvol and dvol == dvol else float("nan")
    max_dd = float(dd.min()) if len(dd) else 0.0
    closed = [t for t in trades if not t.get("open")]
    pnls = np.array([t["pnl"] for t in closed])
    rets_t = np.array([t["return_pct"] for t in closed])
    wins = pnls[pnls > 0].sum() if len(pnls) else 0.0
    losses = -pnls[pnls < 0].sum() if len(pnls) else 0.0
    return {
        "start": int(times[0]) if len(times) else None,
        "end": int(times[-1]) if len(times) else None,
        "bars": int(len(times)),
        "initial_cash": cash,
        "final_equity": final,
        "return_pct": total * 100.0,
        "cagr_pct": cagr * 100.0,
        "volatility_pct": vol * 100.0,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": (cagr * 100.0) / -max_dd if max_dd < 0 and cagr == cagr else float("nan"),
        "max_drawdown_pct": max_dd,
        "max_drawdown_duration_days": _max_duration(times, dd) / 86400 if len(dd) else 0.0,
        "exposure_pct": float(exposure.mean() * 100.0) if len(exposure) else 0.0,
        "num_trades": len(closed),
        "open_trades": len(trades) - len(closed),
        "win_rate_pct": float((pnls > 0).mean() * 100.0) if len(pnls) else float("nan"),
        "profit_factor": float(wins / losses) if losses > 0 else float("nan"),
        "avg_trade_pct": float(rets_t.mean()) if len(rets_t) else float("nan"),
        "best_trade_pct": float(rets_t.max()) if len(rets_t) else float("nan"),
        "worst_trade_pct": float(rets_t.min()) if len(rets_t) else float("nan"),
        "fees": fees,
    }
