"""The indicators strategies use: one class per kernel, holding its state between calls.

`EMA(20)` and the like are for incremental use: `run(history)` once, then `update(newest)` per
bar (the one-call functions in `_functions` wrap them). Periods are in bars; outputs are
in the units of the input unless a docstring says otherwise. Warm-up outputs are NaN, as many as
TA-Lib gives, counted from the first bar whose inputs are all numbers (leading NaNs are skipped,
as TA-Lib's Python wrapper does). Inputs are read in place and may be strided views such as
`shm.array["close"]`; outputs may be written into any float64 arrays, shared memory included,
that do not overlap the inputs.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np

from engine.kernels import _cross, _extrema, _moving, _oscillators, _volatility, _vwap
from engine.kernels._base import NUMBER_TYPES, Indicator, Series, as_input, check_period
from engine.kernels._common import COUNT
from engine.kernels._shared import in_shared_pool

# A fresh SMA over at least this many bars runs as two halves on two threads: below it the
# thread's start (~0.1 ms) is a noticeable share of the pass (2.4 ns a bar for the exact one).
PARALLEL_MIN = 1 << 19

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
    "Cross",
]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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

    Warm-up: period-1 NaN bars. Matches TA-Lib's SMA (a running sum). With `exact`, each value
    is the window's correctly rounded sum divided by `period`, as `math.fsum(window) / period`
    (and backtrader) give it: where two averages are equal in exact arithmetic they compare
    equal, so a crossover does not fire a bar early on rounding. About twice the cost.
    """

    kind = "sma"

    def __init__(self, period: int, exact: bool = False) -> None:
        self.exact = bool(exact)
        super().__init__(period)

    def _new_state(self) -> np.ndarray:
        if self.exact:
            return _moving.sma_exact_state(self.period)
        return _moving.sma_state(self.period)

    def _call(self, ins, outs) -> None:
        kernel = _moving.sma_exact_update if self.exact else _moving.sma_update
        x, out = ins[0], outs[0]
        k = self._split(x)
        if k is None:
            kernel(self.state, x, out)
            return
        # Two halves on two threads, bit for bit the single pass: the second half starts at
        # a bar where the single pass rebuilds its window sum from the window alone, so its
        # state there is the last `period` inputs and nothing else.
        tail = self.state.copy()
        if self.exact:
            bars, ring = _moving._SMAX_BARS, _moving._SMAX_RING
        else:
            bars, ring = _moving._SMA_BARS, _moving._SMA_RING
        tail[COUNT] = k
        tail[COUNT + 1:ring] = 0.0  # the sums, rebuilt at once
        tail[bars] = 1.0  # bars until the rebuild: this very bar
        for h in range(k - self.period, k):
            tail[ring + h % self.period] = x[h]
        helper = threading.Thread(target=kernel, args=(tail, x[k:], out[k:]))
        helper.start()
        try:
            kernel(self.state, x[:k], out[:k])
        finally:
            helper.join()
        self.state = tail

    def _split(self, x: np.ndarray) -> int | None:
        """Where to split a fresh run over a long series in two (None: one pass)."""
        n, m = self.period, x.shape[0]
        if (m < PARALLEL_MIN or n < 2 or self.state[COUNT] != 0 or math.isnan(x[0])
                or _cores() < 2 or in_shared_pool()):
            return None
        every = _moving.RESEED_PERIODS * n
        j = max(1, round((m / 2 - (n - 1)) / every))
        k = n - 1 + j * every
        return k if n <= k < m else None

    def _params(self) -> tuple:
        return (self.period, self.exact)


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
        _volatility.meanvar_update(
            self.state, ins[0], _volatility.MODE_STDDEV, self.k, 0.0, o, o, o
        )

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
        if isinstance(b, NUMBER_TYPES) and not isinstance(a, NUMBER_TYPES):
            a = as_input(a)
            b = np.broadcast_to(np.float64(b), a.shape)
        return super().update(a, b, out=out)


class CrossUnder(CrossOver):
    """True on the bar where series `a` moves from at or above `b` to below it.

    `b` may be a series or, per call, one number. Output as for `CrossOver`.
    """

    kind = "crossunder"
    _above = False


class Cross(CrossOver):
    """Both crossings in one series: +1.0 on the bar where `a` moves from at or below `b` to
    above it, -1.0 where it moves from at or above to below, 0.0 elsewhere (and next to NaN).

    `b` may be a series or, per call, one number. The first bar is never a cross.
    """

    kind = "cross"
    outputs = ("direction",)
    out_dtype = np.dtype(np.float64)

    def _call(self, ins, outs) -> None:
        _cross.cross_sign_update(self.state, ins[0], ins[1], outs[0])


# The names `SignalSet` specs use.
KINDS: dict[str, type[Indicator]] = {
    cls.kind: cls
    for cls in (
        SMA,
        EMA,
        WMA,
        RSI,
        MACD,
        BBands,
        StdDev,
        ZScore,
        ATR,
        Highest,
        Lowest,
        VWAP,
        RollingVWAP,
        CrossOver,
        CrossUnder,
        Cross,
    )
}
