"""Jitted volatility kernels: rolling mean and deviation (STDDEV, Bollinger bands, z-score) and ATR.

Same contract as `_moving`: `kernel(state, inputs..., outs...)` consumes the inputs in order,
writes one value per input into each output and advances `state` in place. No I/O, no allocation
per value.

The rolling variance follows TA-Lib 0.8's cancellation-free scheme: deviations are summed
against a shift near the window, and the sums are rebuilt by a fresh two-pass over the window
when the variance has shrunk below 1e-6 of the mean squared deviation it is extracted from, when
a value far from the shift leaves the window, and at least every 32 periods. A window of
identical values gives exactly 0.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

PERIOD, COUNT = 0, 1
RESEED_PERIODS = 32

# What `meanvar_update` writes: the standard deviation, the three bands, or the z-score.
MODE_STDDEV, MODE_BANDS, MODE_ZSCORE = 0, 1, 2

# [period, count, shift, sum(x-shift), sum((x-shift)^2), sum(x), bars_to_reseed, ring[period]]
_MV_SHIFT, _MV_S1, _MV_S2, _MV_TOTAL, _MV_BARS, _MV_RING = 2, 3, 4, 5, 6, 7


def meanvar_state(period: int) -> np.ndarray:
    state = np.zeros(_MV_RING + period)
    state[PERIOD] = period
    return state


@njit(cache=True, fastmath={"contract"})
def meanvar_update(state, x, mode, k_up, k_dn, out1, out2, out3):
    """Write, per `mode`: stddev*k_up to out1; or upper, middle, lower bands to out1..out3
    (middle +- k_up/k_dn deviations); or the z-score (x - mean)/stddev to out1 (NaN where the
    deviation is 0)."""
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    shift = state[_MV_SHIFT]
    s1 = state[_MV_S1]
    s2 = state[_MV_S2]
    total = state[_MV_TOTAL]
    bars = int(state[_MV_BARS])
    ring = state[_MV_RING:]
    inv = 1.0 / n
    m = x.shape[0]
    i0 = 0
    if c0 == 0:
        while i0 < m and np.isnan(x[i0]):
            out1[i0] = np.nan
            if mode == MODE_BANDS:
                out2[i0] = np.nan
                out3[i0] = np.nan
            i0 += 1
    base = i0 - c0
    g = c0
    for i in range(i0, m):
        v = x[i]
        if g == 0:
            shift = v  # anchor the deviations to the first value, as TA-Lib does
        if g < n:
            d = v - shift
            s1 += d
            s2 += d * d
            total += v
            if g < n - 1:
                out1[i] = np.nan
                if mode == MODE_BANDS:
                    out2[i] = np.nan
                    out3[i] = np.nan
                g += 1
                continue
            bars = RESEED_PERIODS * n
            dold = 0.0
        else:
            h = g - n
            old = x[h + base] if h >= c0 else ring[h % n]
            d = v - shift
            dold = old - shift
            s1 += d - dold
            s2 += d * d - dold * dold
            total += v - old
        mean1 = s1 * inv
        meansq = s2 * inv
        var = meansq - mean1 * mean1
        bars -= 1
        if var < 1e-6 * meansq or dold * dold > 1e6 * s2 or bars <= 0:
            # Rebuild from the window (oldest first): a fresh two-pass around its mean.
            bars = RESEED_PERIODS * n
            total = 0.0
            for k in range(g - n + 1, g + 1):
                total += x[k + base] if k >= c0 else ring[k % n]
            shift = total * inv
            s1 = 0.0
            s2 = 0.0
            for k in range(g - n + 1, g + 1):
                d = (x[k + base] if k >= c0 else ring[k % n]) - shift
                s1 += d
                s2 += d * d
            mean1 = s1 * inv
            meansq = s2 * inv
            var = meansq - mean1 * mean1
            # Spread at or under the rounding of the mean itself is no spread (TA-Lib's floor).
            if var < 1e-12 * meansq:
                var = 0.0
        if var < 0.0:
            var = 0.0
        sd = math.sqrt(var)
        if mode == MODE_STDDEV:
            out1[i] = sd * k_up
        elif mode == MODE_BANDS:
            mid = total * inv
            out1[i] = mid + sd * k_up
            out2[i] = mid
            out3[i] = mid - sd * k_dn
        else:
            out1[i] = (v - total * inv) / sd if sd > 0.0 else np.nan
        g += 1
    for h in range(max(c0, g - n), g):
        ring[h % n] = x[h + base]
    state[COUNT] = g
    state[_MV_SHIFT] = shift
    state[_MV_S1] = s1
    state[_MV_S2] = s2
    state[_MV_TOTAL] = total
    state[_MV_BARS] = bars


# -- ATR ---------------------------------------------------------------------------------------
# [period, count, previous close, running TR sum while seeding, then the average]
_ATR_CLOSE, _ATR_VALUE = 2, 3


def atr_state(period: int) -> np.ndarray:
    state = np.zeros(4)
    state[PERIOD] = period
    return state


@njit(cache=True, fastmath={"contract"})
def atr_update(state, high, low, close, out):
    n = int(state[PERIOD])
    g = int(state[COUNT])
    pc = state[_ATR_CLOSE]
    atr = state[_ATR_VALUE]
    # Wilder's smoothing with TA-Lib's two coefficients: beta = (n-1)/n, alpha = 1 - beta.
    beta = (n - 1.0) / n
    alpha = 1.0 - beta
    m = close.shape[0]
    i = 0
    if g == 0:
        while i < m and (np.isnan(high[i]) or np.isnan(low[i]) or np.isnan(close[i])):
            out[i] = np.nan
            i += 1
    while i < m and g <= n:
        if g == 0:
            out[i] = np.nan
        else:
            hi = high[i]
            lo = low[i]
            tr = hi - lo
            a = abs(pc - hi)
            if a > tr:
                tr = a
            b = abs(pc - lo)
            if b > tr:
                tr = b
            atr += tr
            if g == n:
                atr = atr / n
                out[i] = atr
            else:
                out[i] = np.nan
        pc = close[i]
        g += 1
        i += 1
    for j in range(i, m):
        hi = high[j]
        lo = low[j]
        tr = hi - lo
        a = abs(pc - hi)
        if a > tr:
            tr = a
        b = abs(pc - lo)
        if b > tr:
            tr = b
        atr = alpha * tr + beta * atr
        out[j] = atr
        pc = close[j]
    state[COUNT] = g + (m - i)
    state[_ATR_CLOSE] = pc
    state[_ATR_VALUE] = atr
