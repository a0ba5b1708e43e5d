"""Jitted volatility kernels: rolling mean and deviation (STDDEV, Bollinger bands, z-score) and ATR.

Same contract as `_moving`: `kernel(state, inputs..., outs...)` consumes the inputs in order,
writes one value per input into each output and advances `state` in place. No I/O; the only
allocation is one block of scratch a call.

The rolling variance follows TA-Lib 0.8's cancellation-free scheme: deviations are summed
against a shift near the window, and the sums are rebuilt by a fresh two-pass over the window
when the variance has shrunk below 1e-6 of the mean squared deviation it is extracted from, when
a value far from the shift leaves the window, and at least every 32 periods. A window of
identical values gives exactly 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels._common import (
    COUNT,
    PERIOD,
    PREFETCH_AHEAD,
    first_number,
    fma,
    prefetch,
    save_tail,
)

# The sums are rebuilt at least this often, in periods (TA-Lib 0.8's cadence).
RESEED_PERIODS = 32
# Rebuild when the variance is below this fraction of the mean squared deviation it is taken
# from: the cancellation error is then bounded near eps/1e-6 ~ 2e-10 (TA-Lib 0.8's trigger).
_CANCEL = 1e-6
# Rebuild when a departing deviation squared exceeds this multiple of what remains.
_OUTLIER = 1e6
# After a rebuild, a variance under this fraction of the mean squared deviation is rounding of
# the mean itself, not spread: it is 0 (TA-Lib 0.8's floor).
_FLOOR = 1e-12

# Bars per block of `meanvar_update` (its scratch stays in L1).
_BLOCK = 256

# What `meanvar_update` writes: the standard deviation, the three bands, or the z-score.
MODE_STDDEV, MODE_BANDS, MODE_ZSCORE = 0, 1, 2

# [period, count, shift, sum(x-shift), sum((x-shift)^2), bars until a rebuild, ring[period]]
# The window's mean is shift + sum(x-shift)/period, as exact as the mean itself.
_MV_SHIFT, _MV_S1, _MV_S2, _MV_BARS, _MV_RING = 2, 3, 4, 5, 6


def meanvar_state(period: int) -> np.ndarray:
    state = np.zeros(_MV_RING + period)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def _rebuild(x, ring, g, c0, base, n, inv):
    """Two-pass over the window ending at global position g, oldest first: a shift at its mean,
    the shifted sums and the variance (floored)."""
    total = 0.0
    for h in range(g - n + 1, g + 1):
        total += x[h + base] if h >= c0 else ring[h % n]
    shift = total * inv
    s1 = 0.0
    s2 = 0.0
    for h in range(g - n + 1, g + 1):
        d = (x[h + base] if h >= c0 else ring[h % n]) - shift
        s1 += d
        s2 += d * d
    mean1 = s1 * inv
    meansq = s2 * inv
    var = meansq - mean1 * mean1
    if var < _FLOOR * meansq:
        var = 0.0
    return shift, s1, s2, var


@njit(cache=True, nogil=True, error_model="numpy")
def meanvar_update(state, x, mode, k_up, k_dn, out1, out2, out3):
    """Write, per `mode`: stddev*k_up to out1; or upper, middle, lower bands to out1..out3
    (middle +- k_up/k_dn deviations); or the z-score (x - mean)/stddev to out1 (NaN where the
    deviation is 0)."""
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    shift = state[_MV_SHIFT]
    s1 = state[_MV_S1]
    s2 = state[_MV_S2]
    bars = int(state[_MV_BARS])
    ring = state[_MV_RING:]
    inv = 1.0 / n
    cancel = _CANCEL * inv
    m = x.shape[0]
    i = 0
    if c0 == 0:
        i = first_number(x, 0)
        out1[:i] = np.nan
        if mode == MODE_BANDS:
            out2[:i] = np.nan
            out3[:i] = np.nan
    base = i - c0  # x[h + base] holds global position h >= c0
    g = c0
    un = np.uint64(n)
    ahead = np.uint64(PREFETCH_AHEAD)
    # Blocks of bars: first the running sums, keeping each bar's variance and mean in scratch;
    # then the outputs, a loop whose square roots and divisions vectorize. A block is either
    # all warm-up / ring bars (the first 2*period of a chunk at most) or all steady bars, whose
    # loop has no other branch than the rebuild test. Unsigned indices skip numba's
    # negative-index wraparound.
    blk = min(_BLOCK, m - i) if m > i else 1
    var_buf = np.empty(blk)
    mean_buf = np.empty(blk)
    while i < m:
        nb = min(blk, m - i)
        lo = np.uint64(i)
        if g >= c0 + n:
            for b in range(nb):
                j = lo + np.uint64(b)
                prefetch(x, j + ahead)
                v = x[j]
                old = x[j - un]
                d = v - shift
                dold = old - shift
                s1 += d - dold
                dold2 = dold * dold
                s2 += fma(d, d, -dold2)
                mean1 = s1 * inv
                var = fma(-mean1, mean1, s2 * inv)
                bars -= 1
                if var < cancel * s2 or dold2 > _OUTLIER * s2 or bars <= 0:
                    bars = RESEED_PERIODS * n
                    shift, s1, s2, var = _rebuild(x, ring, g + b, c0, base, n, inv)
                    mean1 = s1 * inv
                var_buf[b] = var if var > 0.0 else 0.0
                mean_buf[b] = shift + mean1
        else:
            nb = min(nb, c0 + n - g)
            for b in range(nb):
                gb = g + b
                v = x[lo + np.uint64(b)]
                if gb < n:
                    if gb == 0:
                        shift = v  # anchor the deviations at the first value, as TA-Lib does
                    d = v - shift
                    s1 += d
                    s2 = fma(d, d, s2)
                    if gb < n - 1:
                        var_buf[b] = np.nan
                        mean_buf[b] = np.nan
                        continue
                    dold = 0.0
                    bars = RESEED_PERIODS * n
                else:
                    old = ring[(gb - n) % n]
                    d = v - shift
                    dold = old - shift
                    s1 += d - dold
                    s2 += fma(d, d, -dold * dold)
                mean1 = s1 * inv
                var = fma(-mean1, mean1, s2 * inv)
                bars -= 1
                if var < cancel * s2 or dold * dold > _OUTLIER * s2 or bars <= 0:
                    bars = RESEED_PERIODS * n
                    shift, s1, s2, var = _rebuild(x, ring, gb, c0, base, n, inv)
                    mean1 = s1 * inv
                var_buf[b] = var if var > 0.0 else 0.0
                mean_buf[b] = shift + mean1
        if mode == MODE_STDDEV:
            for b in range(nb):
                out1[lo + np.uint64(b)] = np.sqrt(var_buf[b]) * k_up
        elif mode == MODE_BANDS:
            for b in range(nb):
                j = lo + np.uint64(b)
                sd = np.sqrt(var_buf[b])
                mid = mean_buf[b]
                out1[j] = fma(sd, k_up, mid)
                out2[j] = mid
                out3[j] = fma(-sd, k_dn, mid)
        else:
            for b in range(nb):
                sd = np.sqrt(var_buf[b])
                z = (x[lo + np.uint64(b)] - mean_buf[b]) / sd
                out1[lo + np.uint64(b)] = z if sd > 0.0 else np.nan
        i += nb
        g += nb
    save_tail(x, ring, c0, base, g, n)
    state[COUNT] = g
    state[_MV_SHIFT] = shift
    state[_MV_S1] = s1
    state[_MV_S2] = s2
    state[_MV_BARS] = bars


# -- ATR ---------------------------------------------------------------------------------------
# [period, count, previous close, running TR sum while seeding, then the average]
_ATR_CLOSE, _ATR_VALUE = 2, 3


def atr_state(period: int) -> np.ndarray:
    state = np.zeros(4)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy")
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
            i += 1
        out[:i] = np.nan
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
    ahead = np.uint64(PREFETCH_AHEAD)
    for j in range(np.uint64(i), np.uint64(m)):
        prefetch(high, j + ahead)
        prefetch(low, j + ahead)
        prefetch(close, j + ahead)
        hi = high[j]
        lo = low[j]
        tr = hi - lo
        a = abs(pc - hi)
        if a > tr:
            tr = a
        b = abs(pc - lo)
        if b > tr:
            tr = b
        atr = fma(beta, atr, alpha * tr)
        out[j] = atr
        pc = close[j]
    state[COUNT] = g + (m - i)
    state[_ATR_CLOSE] = pc
    state[_ATR_VALUE] = atr
