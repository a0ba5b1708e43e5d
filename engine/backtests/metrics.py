"""Backtest statistics from an equity curve and a trade list: returns, risk, drawdowns, trades.

Pure functions of arrays; no I/O. The passes over every bar are numba kernels (one pass, no
temporary the length of the curve: a 10M-bar run's statistics add no bar-sized arrays). Every formula is written out in the README's "Statistics"
table; the returns behind the risk figures are per period of the data's own calendar:

- bars of a day or less: one return per UTC day that has bars (the last equity of each day),
  annualized with 365 periods a year when weekend days carry bars (24/7 markets) and 252 when
  they do not (exchange calendars);
- longer bars (weeks, months): one return per bar, annualized with the bars a year holds.

The first period's return is measured from the starting cash.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numba import njit

__all__ = ["compute_stats", "sharpe_ci", "drawdowns", "period_returns", "periods_per_year_of",
           "probabilistic_sharpe", "expected_max_sharpe", "deflated_sharpe", "sharpe_interval"]

_YEAR = 365.25 * 86400


def drawdowns(equity: np.ndarray) -> np.ndarray:
    """Drawdown of each point from the running peak, as a percent (<= 0)."""
    return _drawdowns(np.asarray(equity, dtype=np.float64))


@njit(cache=True)
def _drawdowns(equity: np.ndarray) -> np.ndarray:
    # The running peak as np.maximum.accumulate keeps it (a NaN stays), then
    # (equity / peak - 1) * 100 where the peak is above 0, else 0.
    n = len(equity)
    out = np.empty(n)
    peak = 0.0
    for i in range(n):
        e = equity[i]
        if i == 0:
            peak = e
        elif math.isnan(peak):
            pass  # a NaN peak stays NaN
        elif math.isnan(e) or e > peak:
            peak = e
        out[i] = (e / peak - 1.0) * 100.0 if peak > 0 else 0.0
    return out


_DAY = 86400
_EULER = 0.5772156649015329  # the Euler-Mascheroni constant (expected maximum of Gumbel draws)


def period_returns(times: np.ndarray, equity: np.ndarray, cash: float, period: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The returns the risk figures use, and the time each period starts (epoch s).

    `times` are the bars' open times, `equity` the equity at each bar's close, `period` the bar
    period (s). Bars of a day or less give one return per UTC day that has bars, from the last
    equity of the day before (the starting cash before the first day); longer bars give one
    return per bar."""
    if not len(times):
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    if period <= _DAY:
        keys, closing = _day_closes(np.asarray(times), np.asarray(equity, dtype=np.float64))
    else:
        keys, closing = np.asarray(times, dtype=np.int64), np.asarray(equity, dtype=np.float64)
    before = np.r_[float(cash), closing[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.where(before > 0, closing / before - 1.0, np.nan)
    return rets, keys


@njit(cache=True)
def _drawdown_summary(times: np.ndarray, equity: np.ndarray) -> tuple[float, float]:
    # min(drawdowns(equity)) (NaN if any is), and the longest time under water in seconds:
    # from the peak before a drawdown (the latest point at a peak; the first point counts as
    # one) to the point back at a peak, or to the end if it never gets back. Each drawdown is
    # computed as `_drawdowns` does and dropped once read.
    dd = _drawdowns(equity[:1])[0]
    lowest = dd
    first = float(times[0])
    peak_t = first
    longest = -np.inf
    regained = False
    peak = equity[0]
    before = dd
    for i in range(len(equity)):
        e = equity[i]
        if i > 0:
            if math.isnan(peak):
                pass
            elif math.isnan(e) or e > peak:
                peak = e
            dd = (e / peak - 1.0) * 100.0 if peak > 0 else 0.0
        if math.isnan(dd) or math.isnan(lowest):
            lowest = math.nan
        elif dd < lowest:
            lowest = dd
        t = float(times[i])
        at_peak = dd >= 0
        if i > 0 and at_peak and not before >= 0:
            regained = True
            longest = max(longest, t - peak_t)
        peak_t = max(peak_t, t if at_peak else first)
        before = dd
    if not regained:
        longest = 0.0
    if not dd >= 0:
        longest = max(longest, float(times[len(times) - 1]) - peak_t)
    return lowest, longest


@njit(cache=True)
def _day_closes(times: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # The last equity of each UTC day that has bars, and the day's start (epoch s). The times
    # are in order: a day ends where a time reaches the next day's start, so each pass
    # compares instead of dividing every time by the day.
    n = len(times)
    days = 0
    end = np.int64(-(2 ** 62))
    for i in range(n):
        t = np.int64(times[i])
        if t >= end:
            days += 1
            end = (t // _DAY + 1) * _DAY
    keys = np.empty(days, dtype=np.int64)
    closing = np.empty(days)
    k = -1
    end = np.int64(-(2 ** 62))
    for i in range(n):
        t = np.int64(times[i])
        if t >= end:
            k += 1
            keys[k] = t // _DAY * _DAY
            end = keys[k] + _DAY
        closing[k] = equity[i]
    return keys, closing


@njit(cache=True)
def _weekend_share(times: np.ndarray) -> float:
    n = len(times)
    weekend = 0
    for i in range(n):
        if (np.int64(times[i]) // _DAY + 3) % 7 >= 5:  # Monday is 0; 1970-01-01 a Thursday
            weekend += 1
    return weekend / n


def periods_per_year_of(times: np.ndarray, period: int) -> float:
    """How many of `period_returns`' periods a year holds. Bars of a day or less: 365 when the
    market trades on weekends (over 60 % of a 7-day week's share of bars, 2/7, fall on Saturdays
    and Sundays, the rule backtesting.py uses), else 252. Longer bars: the bars a year of the
    data holds, (bars - 1) / years spanned."""
    t = np.asarray(times)
    if period > _DAY:
        years = (float(t[-1]) - float(t[0])) / _YEAR if len(t) > 1 else 0.0
        return (len(t) - 1) / years if years > 0 else _YEAR / period
    if not len(t):
        return 252.0
    return 365.0 if _weekend_share(t) > 0.6 * 2 / 7 else 252.0


def _moments(x: np.ndarray) -> tuple[float, float]:
    """Skewness and (non-excess) kurtosis, population moments."""
    if len(x) < 2:
        return math.nan, math.nan
    d = x - x.mean()
    m2 = float(np.mean(d * d))
    if m2 == 0:
        return math.nan, math.nan
    return float(np.mean(d ** 3)) / m2 ** 1.5, float(np.mean(d ** 4)) / m2 ** 2


def probabilistic_sharpe(sr: float, n: int, skew: float, kurtosis: float,
                         benchmark: float = 0.0) -> float:
    """The probability that the true Sharpe ratio exceeds `benchmark` (Bailey and López de
    Prado, 2012). `sr` and `benchmark` are per period (not annualized), `n` the number of
    returns, `kurtosis` non-excess (3 for a normal distribution)."""
    if n < 2 or not all(map(math.isfinite, (sr, skew, kurtosis, benchmark))):
        return math.nan
    var = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if var <= 0:
        return math.nan
    return NormalDist().cdf((sr - benchmark) * math.sqrt(n - 1) / math.sqrt(var))


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """The Sharpe ratio (per period) the best of `n_trials` unskilled trials reaches on average,
    given the variance of the trials' Sharpe ratios (Bailey and López de Prado, 2014)."""
    if n_trials <= 1 or not variance > 0:
        return 0.0
    z = NormalDist().inv_cdf
    return math.sqrt(variance) * ((1 - _EULER) * z(1 - 1 / n_trials)
                                  + _EULER * z(1 - 1 / (n_trials * math.e)))


def deflated_sharpe(sr: float, n: int, skew: float, kurtosis: float, n_trials: int,
                    trials_variance: float) -> float:
    """The probabilistic Sharpe ratio of `sr` against the best of `n_trials` unskilled trials
    (the deflated Sharpe ratio): the probability that a result chosen as the best of that many
    is real. Per-period Sharpe ratios; one trial gives the probabilistic Sharpe ratio."""
    return probabilistic_sharpe(sr, n, skew, kurtosis,
                                expected_max_sharpe(n_trials, trials_variance))


@njit(cache=True)
def _resampled_sharpes(x: np.ndarray, draws: np.ndarray, out: np.ndarray) -> None:
    """out[r] = mean / sample standard deviation of x[draws[r]] (NaN where it is 0): the
    bootstrap's resamples read in place, never gathered into a matrix of their own."""
    n = draws.shape[1]
    for r in range(draws.shape[0]):
        total = 0.0
        for i in range(n):
            total += x[draws[r, i]]
        mean = total / n
        ss = 0.0
        for i in range(n):
            d = x[draws[r, i]] - mean
            ss += d * d
        sd = math.sqrt(ss / (n - 1))
        out[r] = mean / sd if sd > 0 else math.nan


def sharpe_interval(rets: np.ndarray, per_year: float, risk_free: float = 0.0,
                    level: float = 0.95, resamples: int = 2000, seed: int = 0
                    ) -> tuple[float, float]:
    """A bootstrap confidence interval of the annualized Sharpe ratio: `resamples` draws of the
    returns with replacement (seeded: the same inputs give the same interval), the central
    `level` share of their Sharpe ratios (percentile method)."""
    x = np.asarray(rets, dtype=np.float64) - risk_free / per_year
    n = len(x)
    if n < 3 or not np.isfinite(x).all():
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    chunk = max(1, 4_000_000 // n)  # bound the index matrix to ~32 MB
    for lo in range(0, resamples, chunk):
        hi = min(resamples, lo + chunk)
        _resampled_sharpes(x, rng.integers(0, n, size=(hi - lo, n)), out[lo:hi])
    out = out[np.isfinite(out)] * math.sqrt(per_year)
    if not len(out):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    lo_q, hi_q = np.percentile(out, [tail, 100 - tail])
    return float(lo_q), float(hi_q)


def sharpe_ci(times: np.ndarray, equity: np.ndarray, cash: float, period: int,
              periods_per_year: float | None = None, risk_free: float = 0.0
              ) -> tuple[float, float]:
    """`compute_stats`' bootstrap interval of the Sharpe ratio, on its own: a run computes it
    before building its trades, so the bootstrap's draws and the trades are never held at once."""
    per_year = float(periods_per_year or (periods_per_year_of(times, period)))
    rets, _ = period_returns(times, equity, cash, period)
    return sharpe_interval(rets[np.isfinite(rets)], per_year, risk_free)


def compute_stats(times: np.ndarray, equity: np.ndarray, exposure: np.ndarray, trades: list,
                  fees: float, cash: float, *, period: int | None = None,
                  periods_per_year: float | None = None, risk_free: float = 0.0,
                  bootstrap: bool = True, costs: str | None = None,
                  interval: tuple[float, float] | None = None) -> dict:
    """The statistics of a run (the README's "Statistics" table defines each).

    `times`: each bar's open time (epoch s); `equity`: the equity at its close; `exposure`:
    whether a position was open then; `trades`: trade records (`pnl`, `return_pct`, `open`);
    `period`: the bar period (s; guessed from `times` when None); `periods_per_year`: overrides
    the calendar's; `risk_free`: the annual risk-free rate as a fraction; `bootstrap`: compute
    the Sharpe ratio's confidence interval (or `interval`: that interval as `sharpe_ci` gave
    it beforehand); `costs`: the run's costs as text ("none" when it paid none)."""
    from engine.timefmt import iso

    times = np.asarray(times)
    if period is None:
        d = np.diff(times)
        d = d[d > 0]
        period = int(np.median(d)) if len(d) else _DAY
    final = float(equity[-1]) if len(equity) else cash
    # The deepest drawdown and the longest time under water, in one pass (no curve-long array).
    max_dd, under = (_drawdown_summary(np.asarray(times), np.asarray(equity, dtype=np.float64))
                     if len(equity) else (0.0, 0.0))
    years = (float(times[-1]) - float(times[0])) / _YEAR if len(times) > 1 else 0.0
    total = final / cash - 1.0
    cagr = (final / cash) ** (1.0 / years) - 1.0 if years > 0 and final > 0 else math.nan
    per_year = float(periods_per_year or (periods_per_year_of(times, period)))
    rets, _ = period_returns(times, equity, cash, period)
    rets = rets[np.isfinite(rets)]
    excess = rets - risk_free / per_year
    n = len(rets)
    sd = float(np.std(rets, ddof=1)) if n > 1 else math.nan
    vol = sd * math.sqrt(per_year)
    mean_x = float(np.mean(excess)) if n else math.nan
    sd_x = float(np.std(excess, ddof=1)) if n > 1 else math.nan
    sr = mean_x / sd_x if sd_x and sd_x == sd_x else math.nan  # per period
    sharpe = sr * math.sqrt(per_year)
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2))) if n else math.nan
    sortino = mean_x / downside * math.sqrt(per_year) if downside else math.nan
    skew, kurt = _moments(rets)
    lo, hi = interval if interval is not None else (
        sharpe_interval(rets, per_year, risk_free) if bootstrap else (math.nan, math.nan))
    columns = getattr(trades, "columns", None)  # `Trades`: read its columns, not dicts
    if columns is not None:
        is_open = columns["open"]
        pnls = columns["pnl"][~is_open]
        rets_t = columns["return_pct"][~is_open]
        still_pnl = columns["pnl"][is_open].tolist()
    else:
        closed = [t for t in trades if not t.get("open")]
        still_pnl = [t["pnl"] for t in trades if t.get("open")]
        pnls = np.array([t["pnl"] for t in closed])
        rets_t = np.array([t["return_pct"] for t in closed])
    wins = pnls[pnls > 0].sum() if len(pnls) else 0.0
    losses = -pnls[pnls < 0].sum() if len(pnls) else 0.0
    first = int(times[0]) if len(times) else None
    last = int(times[-1]) if len(times) else None
    return {
        "start": iso(first, period),
        "end": iso(last, period),
        "start_time": first,
        "end_time": last,
        "bars": int(len(times)),
        "initial_cash": cash,
        "final_equity": final,
        "return_pct": total * 100.0,
        "cagr_pct": cagr * 100.0,
        "volatility_pct": vol * 100.0,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": (cagr * 100.0) / -max_dd if max_dd < 0 and cagr == cagr else math.nan,
        "sharpe_ci_low": lo,
        "sharpe_ci_high": hi,
        "probabilistic_sharpe": probabilistic_sharpe(sr, n, skew, kurt),
        "skew": skew,
        "kurtosis": kurt,
        "periods": n,
        "periods_per_year": per_year,
        "risk_free": risk_free,
        "max_drawdown_pct": max_dd,
        "max_drawdown_duration_days": under / 86400,
        "exposure_pct": float(np.mean(exposure) * 100.0) if len(exposure) else 0.0,
        "num_trades": len(pnls),
        "open_trades": len(still_pnl),
        "unrealized_pnl": float(sum(still_pnl)),
        "win_rate_pct": float((pnls > 0).mean() * 100.0) if len(pnls) else math.nan,
        "profit_factor": float(wins / losses) if losses > 0 else math.nan,
        "avg_trade_pct": float(rets_t.mean()) if len(rets_t) else math.nan,
        "best_trade_pct": float(rets_t.max()) if len(rets_t) else math.nan,
        "worst_trade_pct": float(rets_t.min()) if len(rets_t) else math.nan,
        "fees": fees,
        "costs": costs if costs is not None else ("none" if fees == 0 else "fees"),
    }
