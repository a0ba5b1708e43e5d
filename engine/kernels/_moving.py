"""Jitted moving averages (SMA, EMA, WMA) in their incremental state form.

Every kernel here has the signature `kernel(state, x, out)`: it consumes the values of `x` in
order, writes one output per input into `out` and advances `state` in place, so feeding a series
in one call or in any number of chunks gives the same outputs bit for bit. `x` and `out` may be
strided views (a field of a record array in shared memory); `out` must not overlap `x`.

State arrays are float64 and start with `[period, count]`, where `count` is the number of values
consumed since the first non-NaN one: leading NaNs are skipped (NaN out) as the TA-Lib Python
wrapper skips them, so a kernel can run over the output of another that is still warming up.
The rest of the layout is private to each kernel; build states with the `*_state` functions.

Nothing here allocates per value, does I/O or touches anything but its arguments.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Header slots shared by every windowed kernel in this package.
PERIOD, COUNT = 0, 1

# How often a running window sum is rebuilt from the window itself, in multiples of the period:
# the same cadence TA-Lib 0.8 uses for its variance, so accumulated rounding stays bounded by
# recent history instead of growing with the length of the series.
RESEED_PERIODS = 32
# WMA's weighted sum drifts faster; TA-Lib 0.8 rebuilds it every 8 periods (its issue #255).
WMA_RESEED_PERIODS = 8

# -- SMA ---------------------------------------------------------------------------------------
# [period, count, total, bars_to_reseed, ring[period]]
_SMA_TOTAL, _SMA_BARS, _SMA_RING = 2, 3, 4


def sma_state(period: int) -> np.ndarray:
    state = np.zeros(_SMA_RING + period)
    state[PERIOD] = period
    return state


@njit(cache=True)
def sma_update(state, x, out):
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    total = state[_SMA_TOTAL]
    bars = int(state[_SMA_BARS])
    ring = state[_SMA_RING:]
    inv = 1.0 / n
    m = x.shape[0]
    i0 = 0
    if c0 == 0:
        while i0 < m and np.isnan(x[i0]):
            out[i0] = np.nan
            i0 += 1
    base = i0 - c0  # x[h + base] is the value of global position h, for h >= c0
    g = c0
    for i in range(i0, m):
        v = x[i]
        if g < n:
            total += v
            out[i] = total * inv if g == n - 1 else np.nan
            if g == n - 1:
                bars = RESEED_PERIODS * n
        else:
            h = g - n
            old = x[h + base] if h >= c0 else ring[h % n]
            total += v - old
            bars -= 1
            if bars <= 0:
                bars = RESEED_PERIODS * n
                total = 0.0
                for k in range(g - n + 1, g + 1):
                    total += x[k + base] if k >= c0 else ring[k % n]
            out[i] = total * inv
        g += 1
    for h in range(max(c0, g - n), g):
        ring[h % n] = x[h + base]
    state[COUNT] = g
    state[_SMA_TOTAL] = total
    state[_SMA_BARS] = bars


# -- EMA ---------------------------------------------------------------------------------------
# [period, count, value]: the running sum while seeding, then the average itself.
_EMA_VALUE = 2


def ema_state(period: int) -> np.ndarray:
    state = np.zeros(3)
    state[PERIOD] = period
    return state


@njit(cache=True, fastmath={"contract"})
def ema_update(state, x, out):
    n = int(state[PERIOD])
    g = int(state[COUNT])
    prev = state[_EMA_VALUE]
    # k + beta == 1 exactly (the order TA-Lib's MACD uses); k*x + beta*prev keeps a single
    # fused multiply-add on the loop-carried chain.
    beta = (n - 1.0) / (n + 1.0)
    k = 1.0 - beta
    beta = 1.0 - k
    m = x.shape[0]
    i = 0
    if g == 0:
        while i < m and np.isnan(x[i]):
            out[i] = np.nan
            i += 1
    while i < m and g < n:
        prev += x[i]
        if g == n - 1:
            prev = prev / n
            out[i] = prev
        else:
            out[i] = np.nan
        g += 1
        i += 1
    if n == 1:
        # No smoothing: a copy, as TA-Lib does (k*x + 0*prev would turn inf into NaN).
        for j in range(i, m):
            prev = x[j]
            out[j] = prev
    else:
        for j in range(i, m):
            prev = k * x[j] + beta * prev
            out[j] = prev
    state[COUNT] = g + (m - i)
    state[_EMA_VALUE] = prev


# -- WMA ---------------------------------------------------------------------------------------
# [period, count, weighted_sum, window_sum, bars_to_reseed, ring[period]]
# Between bars, weighted_sum holds sum((k) * x) over the window with weights 0..period-1 from the
# oldest, so adding the new value at weight `period` completes the next window.
_WMA_WSUM, _WMA_SUM, _WMA_BARS, _WMA_RING = 2, 3, 4, 5


def wma_state(period: int) -> np.ndarray:
    state = np.zeros(_WMA_RING + period)
    state[PERIOD] = period
    return state


@njit(cache=True, fastmath={"contract"})
def wma_update(state, x, out):
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    wsum = state[_WMA_WSUM]
    wsub = state[_WMA_SUM]
    bars = int(state[_WMA_BARS])
    ring = state[_WMA_RING:]
    inv_div = 2.0 / (n * (n + 1.0))
    m = x.shape[0]
    i0 = 0
    if c0 == 0:
        while i0 < m and np.isnan(x[i0]):
            out[i0] = np.nan
            i0 += 1
    base = i0 - c0
    g = c0
    for i in range(i0, m):
        v = x[i]
        if g < n - 1:
            wsub += v
            wsum += v * (g + 1)
            out[i] = np.nan
            g += 1
            continue
        if g == n - 1:
            bars = WMA_RESEED_PERIODS * n
            old = 0.0
        else:
            h = g - n
            old = x[h + base] if h >= c0 else ring[h % n]
        wsub += v - old
        t = v * n
        bars -= 1
        if bars <= 0:
            bars = WMA_RESEED_PERIODS * n
            wsub = 0.0
            full = 0.0
            w = 1.0
            for k in range(g - n + 1, g + 1):
                y = x[k + base] if k >= c0 else ring[k % n]
                wsub += y
                full += y * w
                w += 1.0
            out[i] = full * inv_div
            wsum = full - wsub
        else:
            out[i] = (wsum + t) * inv_div
            wsum += t - wsub
        g += 1
    for h in range(max(c0, g - n), g):
        ring[h % n] = x[h + base]
    state[COUNT] = g
    state[_WMA_WSUM] = wsum
    state[_WMA_SUM] = wsub
    state[_WMA_BARS] = bars
