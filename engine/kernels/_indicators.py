"""The indicators strategies use: one class per kernel holding its state, and a function each.

Classes (`EMA(20)`) are for incremental use: `run(history)` once, then `update(newest)` per bar.
Functions (`ema(close, 20)`) compute a whole series in one call. Periods are in bars; outputs are
in the units of the input unless a docstring says otherwise. Warm-up outputs are NaN, as many as
TA-Lib gives, counted from the first bar whose inputs are all numbers (leading NaNs are skipped,
as TA-Lib's Python wrapper does). Inputs are read in place and may be strided views such as
`shm.array["close"]`; outputs may be written into any float64 arrays, shared memory included,
that do not overlap the inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.kernels import _cross, _extrema, _moving, _oscillators, _volatility, _vwap
from engine.kernels._base import Indicator, Series, check_period

__all__ = [
    "KINDS",
    "SMA",
    "EMA",
    "WMA",
    "RSI",
    "MACD",
    "BBands",
    "StdDev",
    "ZScore",
    "ATR",
    "Highest",
    "Lowest",
    "VWAP",
    "RollingVWAP",
    "CrossOver",
    "CrossUnder",
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
]


class _Windowed(Indicator):
    """An indicator over the last `period` bars of one series."""

    minimum_period = 1

    def __init__(self, period: int) -> None:
        self.period = check_period("period", period, self.minimum_period)
        self.lookback = self.period - 1
        super().__init__()

    def _params(self) -> tuple:
        return (self.period,)


class SMA(_Windowed):
    """Simple moving average of the last `period` bars, in the input's units.

    Warm-up: period-1 NaN bars. Matches TA-Lib's SMA.
    """

    kind = "sma"

    def _new_state(self) -> np.ndarray:
        return _moving.sma_state(self.period)

    def _call(self, ins, outs) -> None:
        _moving.sma_update(self.state, ins[0], outs[0])


class EMA(_Windowed):
    """Exponential moving average with smoothing 2/(period+1), in the input's units.

    Seeded with the simple average of the first `period` bars, as TA-Lib does.
    Warm-up: period-1 NaN bars.
    """

    kind = "ema"

    def _new_state(self) -> np.ndarray:
        return _moving.ema_state(self.period)

    def _call(self, ins, outs) -> None:
        _moving.ema_update(self.state, ins[0], outs[0])


class WMA(_Windowed):
    """Linearly weighted moving average (weights 1..period, newest heaviest), in input units.

    Warm-up: period-1 NaN bars. Matches TA-Lib's WMA.
    """

    kind = "wma"

    def _new_state(self) -> np.ndarray:
        return _moving.wma_state(self.period)

    def _call(self, ins, outs) -> None:
        _moving.wma_update(self.state, ins[0], outs[0])


class RSI(_Windowed):
    """Relative strength index in percent (0 to 100), Wilder's smoothing of gains and losses.

    Seeded with the mean gain and loss of the first `period` changes, as TA-Lib does; 0 while
    nothing has moved. Warm-up: `period` NaN bars (the first bar has no change).
    """

    kind = "rsi"
    minimum_period = 2

    def __init__(self, period: int = 14) -> None:
        super().__init__(period)
        self.lookback = self.period

    def _new_state(self) -> np.ndarray:
        return _oscillators.rsi_state(self.period)

    def _call(self, ins, outs) -> None:
        _oscillators.rsi_update(self.state, ins[0], outs[0])


class MACD(Indicator):
    """MACD line (fast EMA minus slow EMA), its signal line (EMA of the line) and the histogram
    (line minus signal), all in the input's units.

    Both price EMAs are seeded with simple averages whose windows end on bar slow-1, and the
    signal with the mean of its first `signal` line values, as TA-Lib does; a fast period
    longer than the slow one is swapped. Warm-up: slow+signal-2 NaN bars on all three outputs.
    """

    kind = "macd"
    outputs = ("line", "signal", "hist")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.fast = check_period("fast", fast, 2)
        self.slow = check_period("slow", slow, 2)
        self.signal = check_period("signal", signal, 1)
        self.lookback = max(self.fast, self.slow) - 1 + self.signal - 1
        super().__init__()

    def _new_state(self) -> np.ndarray:
        return _oscillators.macd_state(self.fast, self.slow, self.signal)

    def _call(self, ins, outs) -> None:
        _oscillators.macd_update(self.state, ins[0], outs[0], outs[1], outs[2])

    def _params(self) -> tuple:
        return (self.fast, self.slow, self.signal)


class BBands(Indicator):
    """Bollinger bands: the simple moving average of `period` bars, and that average plus
    `up` and minus `down` population standard deviations; in the input's units.

    Warm-up: period-1 NaN bars. Matches TA-Lib's BBANDS with its default (simple) average.
    """

    kind = "bbands"
    outputs = ("upper", "middle", "lower")

    def __init__(self, period: int = 20, up: float = 2.0, down: float = 2.0) -> None:
        self.period = check_period("period", period, 2)
        self.up = float(up)
        self.down = float(down)
        self.lookback = self.period - 1
        super().__init__()

    def _new_state(self) -> np.ndarray:
        return _volatility.meanvar_state(self.period)

    def _call(self, ins, outs) -> None:
        _volatility.meanvar_update(
            self.state, ins[0], _volatility.MODE_BANDS, self.up, self.down, *outs
        )

    def _params(self) -> tuple:
        return (self.period, self.up, self.down)


class StdDev(Indicator):
    """Rolling population standard deviation of `period` bars times `k`, in the input's units.

    Exactly 0 over a window of identical values. Warm-up: period-1 NaN bars. Matches TA-Lib's
    STDDEV (nbdev = k).
    """

    kind = "stddev"

    def __init__(self, period: int, k: float = 1.0) -> None:
        self.period = check_period("period", period, 2)
        self.k = float(k)
        self.lookback = self.period - 1
        super().__init__()

    def _new_state(self) -> np.ndarray:
        return _volatility.meanvar_state(self.period)

    def _call(self, ins, outs) -> None:
        o = outs[0]
        _volatility.meanvar_update(self.state, ins[0], _volatility.MODE_STDDEV, self.k, 0.0, o, o, o)

    def _params(self) -> tuple:
        return (self.period, self.k)


class ZScore(_Windowed):
    """Rolling z-score: (value - mean) / population standard deviation over `period` bars,
    in standard deviations; NaN where the window's values are all equal.

    Warm-up: period-1 NaN bars.
    """

    kind = "zscore"
    minimum_period = 2

    def _new_state(self) -> np.ndarray:
        return _volatility.meanvar_state(self.period)

    def _call(self, ins, outs) -> None:
        o = outs[0]
        _volatility.meanvar_update(self.state, ins[0], _volatility.MODE_ZSCORE, 1.0, 1.0, o, o, o)


class ATR(_Windowed):
    """Average true range over `period` bars with Wilder's smoothing, in price units.

    True range: the greatest of high-low, |previous close - high| and |previous close - low|.
    Seeded with the mean true range of bars 1..period, as TA-Lib does. Warm-up: `period` NaN
    bars (the first bar has no previous close).
    """

    kind = "atr"
    inputs = ("high", "low", "close")

    def __init__(self, period: int = 14) -> None:
        super().__init__(period)
        self.lookback = self.period

    def _new_state(self) -> np.ndarray:
        return _volatility.atr_state(self.period)

    def _call(self, ins, outs) -> None:
        _volatility.atr_update(self.state, ins[0], ins[1], ins[2], outs[0])


class Highest(_Windowed):
    """Highest value of the last `period` bars (TA-Lib's MAX). Warm-up: period-1 NaN bars."""

    kind = "highest"
    inputs = ("high",)

    def _new_state(self) -> np.ndarray:
        return _extrema.extreme_state(self.period)

    def _call(self, ins, outs) -> None:
        _extrema.extreme_update(self.state, ins[0], outs[0], True)


class Lowest(_Windowed):
    """Lowest value of the last `period` bars (TA-Lib's MIN). Warm-up: period-1 NaN bars."""

    kind = "lowest"
    inputs = ("low",)

    def _new_state(self) -> np.ndarray:
        return _extrema.extreme_state(self.period)

    def _call(self, ins, outs) -> None:
        _extrema.extreme_update(self.state, ins[0], outs[0], False)


class VWAP(Indicator):
    """Volume-weighted average price since the start of the current session, in price units.

    Sessions are `session` seconds long and start at `offset` seconds past a multiple of
    `session` since the epoch (default: UTC days). `time` is the bar's epoch seconds. Bars with
    no volume (or no price) add nothing; NaN until the session has traded. No warm-up.
    """

    kind = "vwap"
    inputs = ("bar_wap", "volume", "time")
    _numeric_inputs = frozenset({2})

    def __init__(self, session: float = 86400.0, offset: float = 0.0) -> None:
        if not session > 0:
            raise ValueError(f"session must be a positive number of seconds, got {session!r}")
        self.session = float(session)
        self.offset = float(offset)
        self.lookback = 0
        super().__init__()

    def _new_state(self) -> np.ndarray:
        return _vwap.session_vwap_state(self.session, self.offset)

    def _call(self, ins, outs) -> None:
        _vwap.session_vwap_update(self.state, ins[0], ins[1], ins[2], outs[0])

    def _params(self) -> tuple:
        return (self.session, self.offset)


class RollingVWAP(_Windowed):
    """Volume-weighted average price of the last `period` bars, in price units.

    Bars with no volume (or no price) add nothing; NaN while the window has not traded.
    Warm-up: period-1 NaN bars.
    """

    kind = "rolling_vwap"
    inputs = ("bar_wap", "volume")

    def _new_state(self) -> np.ndarray:
        return _vwap.rolling_vwap_state(self.period)

    def _call(self, ins, outs) -> None:
        _vwap.rolling_vwap_update(self.state, ins[0], ins[1], outs[0])


class CrossOver(Indicator):
    """True on the bar where series `a` moves from at or below `b` to above it.

    `b` may be a series or, per call, one number (a threshold). Output is bool, or 1.0/0.0 when
    written into a float64 `out`. The first bar is never a cross.
    """

    kind = "crossover"
    inputs = ("a", "b")
    out_dtype = np.dtype(np.bool_)
    _above = True
    _count_slot = 0

    def __init__(self) -> None:
        self.lookback = 0
        super().__init__()

    def _new_state(self) -> np.ndarray:
        return _cross.cross_state()

    def _call(self, ins, outs) -> None:
        _cross.cross_update(self.state, ins[0], ins[1], outs[0], self._above)

    def _params(self) -> tuple:
        return ()

    def update(self, a: Series, b: Series, out: Any = None) -> Any:
        """Feed the next bars of `a` and `b` (a series or one number) and return the crosses."""
        if np.ndim(b) == 0 and np.ndim(a) == 1:
            b = np.broadcast_to(np.float64(b), np.shape(a))
        return super().update(a, b, out=out)


class CrossUnder(CrossOver):
    """True on the bar where series `a` moves from at or above `b` to below it.

    `b` may be a series or, per call, one number. Output as for `CrossOver`.
    """

    kind = "crossunder"
    _above = False


# The names `SignalSet` specs use.
KINDS: dict[str, type[Indicator]] = {
    cls.kind: cls
    for cls in (SMA, EMA, WMA, RSI, MACD, BBands, StdDev, ZScore, ATR, Highest, Lowest, VWAP,
                RollingVWAP, CrossOver, CrossUnder)
}


# -- one-call functions ------------------------------------------------------------------------


def sma(close: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the simple moving average of `period` bars; period-1 NaN warm-up bars."""
    return SMA(period).run(close, out=out)


def ema(close: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the EMA (smoothing 2/(period+1), SMA-seeded); period-1 NaN warm-up bars."""
    return EMA(period).run(close, out=out)


def wma(close: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the linearly weighted moving average of `period` bars; period-1 NaN bars."""
    return WMA(period).run(close, out=out)


def rsi(close: Series, period: int = 14, *, out: Any = None) -> np.ndarray:
    """Return Wilder's RSI in percent (0..100); `period` NaN warm-up bars."""
    return RSI(period).run(close, out=out)


def macd(
    close: Series, fast: int = 12, slow: int = 26, signal: int = 9, *, out: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (line, signal, histogram) of the MACD in price units; slow+signal-2 NaN bars."""
    return MACD(fast, slow, signal).run(close, out=out)


def bbands(
    close: Series, period: int = 20, up: float = 2.0, down: float = 2.0, *, out: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the (upper, middle, lower) Bollinger bands in price units; period-1 NaN bars.

    `up` and `down` are in population standard deviations of the last `period` bars.
    """
    return BBands(period, up, down).run(close, out=out)


def stddev(close: Series, period: int, k: float = 1.0, *, out: Any = None) -> np.ndarray:
    """Return the rolling population standard deviation times `k`; period-1 NaN bars."""
    return StdDev(period, k).run(close, out=out)


def zscore(close: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the rolling z-score in standard deviations; period-1 NaN warm-up bars."""
    return ZScore(period).run(close, out=out)


def atr(
    high: Series, low: Series, close: Series, period: int = 14, *, out: Any = None
) -> np.ndarray:
    """Return the average true range (Wilder) in price units; `period` NaN warm-up bars."""
    return ATR(period).run(high, low, close, out=out)


def highest(series: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the highest value of the last `period` bars; period-1 NaN warm-up bars."""
    return Highest(period).run(series, out=out)


def lowest(series: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the lowest value of the last `period` bars; period-1 NaN warm-up bars."""
    return Lowest(period).run(series, out=out)


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


def rolling_vwap(price: Series, volume: Series, period: int, *, out: Any = None) -> np.ndarray:
    """Return the VWAP of the last `period` bars in price units; period-1 NaN warm-up bars."""
    return RollingVWAP(period).run(price, volume, out=out)


def crossover(a: Series, b: Series, *, out: Any = None) -> np.ndarray:
    """Return True where `a` crosses above `b` (a series or a number) on that bar."""
    return CrossOver().run(a, b, out=out)


def crossunder(a: Series, b: Series, *, out: Any = None) -> np.ndarray:
    """Return True where `a` crosses below `b` (a series or a number) on that bar."""
    return CrossUnder().run(a, b, out=out)
