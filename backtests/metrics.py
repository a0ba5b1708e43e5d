"""Backtest statistics from an equity curve and a trade list: returns, risk, drawdowns, trades.

Pure functions of arrays; no I/O. Annualization follows the calendar of the data: per-day
returns (the last equity of each UTC day), 252 periods a year when the data has no weekend
days (exchange calendars) and 365 when it trades every day (crypto).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["compute_stats", "drawdowns"]

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
