"""One-call functions over whole series: `ema(close, 20)` builds `EMA(20)` and runs it once.

Same units, warm-up and in-place rules as the classes in `_indicators`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.kernels._base import Series
from engine.kernels._indicators import (
    ATR,
    EMA,
    MACD,
    RSI,
    SMA,
    VWAP,
    WMA,
    BBands,
    Cross,
    CrossOver,
    CrossUnder,
    Highest,
    Lowest,
    RollingVWAP,
    StdDev,
    ZScore,
)
from engine.kernels._shared import shared

__all__ = [
    "sma",
    "ema",
    "wma",
    "rsi",
    "macd",
    "bbands",
    "stddev",
    "zscore",
    "atr",
    "highest",
    "lowest",
    "vwap",
    "rolling_vwap",
    "crossover",
    "crossunder",
    "cross",
]


@shared
def sma(close: Series, period: int, *, out: Any = None, exact: bool = False) -> np.ndarray:
    """Return the simple moving average of `period` bars, in input units; period-1 NaN bars.
    `exact`: each value as math.fsum(window) / period (see `SMA`)."""
    return SMA(period, exact).run(close, out=out)


@shared
def ema(close: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the EMA (smoothing 2/(period+1), SMA-seeded) in input units; period-1 NaN bars."""
    return EMA(period).run(close, out=out)


@shared
def wma(close: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the weighted (1..period) moving average, in input units; period-1 NaN bars."""
    return WMA(period).run(close, out=out)


@shared
def rsi(close: Series, period: int = 14, *, out: Any = None) -> np.ndarray:
    """Return Wilder's RSI in percent (0..100); `period` NaN warm-up bars."""
    return RSI(period).run(close, out=out)


@shared
def macd(
    close: Series, fast: int = 12, slow: int = 26, signal: int = 9, *, out: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (line, signal, histogram) of the MACD in price units; slow+signal-2 NaN bars."""
    return MACD(fast, slow, signal).run(close, out=out)


@shared
def bbands(
    close: Series, period: int = 20, up: float = 2.0, down: float = 2.0, *, out: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the (upper, middle, lower) Bollinger bands in price units; period-1 NaN bars.

    `up` and `down` are in population standard deviations of the last `period` bars.
    """
    return BBands(period, up, down).run(close, out=out)


@shared
def stddev(close: Series, period: int, k: float = 1.0, *, out: Any = None) -> np.ndarray:
    """Return `k` rolling population standard deviations, in input units; period-1 NaN bars."""
    return StdDev(period, k).run(close, out=out)


@shared
def zscore(close: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the rolling z-score in standard deviations; period-1 NaN warm-up bars."""
    return ZScore(period).run(close, out=out)


@shared
def atr(
    high: Series, low: Series, close: Series, period: int = 14, *, out: Any = None
) -> np.ndarray:
    """Return the average true range (Wilder) in price units; `period` NaN warm-up bars."""
    return ATR(period).run(high, low, close, out=out)


@shared
def highest(series: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the highest of the last `period` values, in input units; period-1 NaN bars."""
    return Highest(period).run(series, out=out)


@shared
def lowest(series: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the lowest of the last `period` values, in input units; period-1 NaN bars."""
    return Lowest(period).run(series, out=out)


@shared
def vwap(
    price: Series,
    volume: Series,
    time: Series,
    session: float = 86400.0,
    offset: float = 0.0,
    *,
    out: Any = None,
) -> np.ndarray:
    """Return the session-anchored VWAP in price units; `time`, `session` and `offset` in seconds.

    Sessions start at `offset` seconds past each multiple of `session` since the epoch.
    """
    return VWAP(session, offset).run(price, volume, time, out=out)


@shared
def rolling_vwap(price: Series, volume: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the VWAP of the last `period` bars in price units; period-1 NaN warm-up bars."""
    return RollingVWAP(period).run(price, volume, out=out)


@shared
def crossover(a: Series, b: Series, *, out: Any = None) -> np.ndarray:
    """Return True where `a` crosses above `b` (a series or a number) on that bar."""
    return CrossOver().run(a, b, out=out)


@shared
def crossunder(a: Series, b: Series, *, out: Any = None) -> np.ndarray:
    """Return True where `a` crosses below `b` (a series or a number) on that bar."""
    return CrossUnder().run(a, b, out=out)


@shared
def cross(a: Series, b: Series, *, out: Any = None) -> np.ndarray:
    """Return +1.0 where `a` crosses above `b` (a series or a number), -1.0 where it crosses
    below, 0.0 elsewhere."""
    return Cross().run(a, b, out=out)
