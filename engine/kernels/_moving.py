"""Jitted moving averages (SMA, EMA, WMA) in their incremental state form.

Every kernel here has the signature `kernel(state, x, out)`: it consumes the values of `x` in
order, writes one output per input into `out` and advances `state` in place, so feeding a series
in one call or in any number of chunks gives the same outputs bit for bit. `x` and `out` may be
strided views (a field of a record array in shared memory); `out` must not overlap `x`.

State arrays are float64 and start with `[period, count]`, where `count` is the number of values
consumed since the first non-NaN one: leading NaNs are skipped (NaN out) as the TA-Lib Python
wrapper skips them, so a kernel can run over the output of another that is still warming up.
The rest of the layout is private to each kernel; build states with the `*_state` functions.
Windowed kernels keep the last `period` inputs in a ring at the end of their state, so a chunk
can drop values that arrived in earlier chunks.

Nothing here allocates, does I/O or touches anything but its arguments. Kernels run without
the GIL (`nogil`), so a thread may compute while others run Python.
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

# How often a running window sum is rebuilt from the window itself, in periods: TA-Lib 0.8's
# cadence for its variance, so rounding accumulated in a running sum stays bounded by recent
# history instead of growing with the length of the series.
RESEED_PERIODS = 32
# A weighted sum drifts faster; TA-Lib 0.8 rebuilds WMA's every 8 periods (its issue #255).
WMA_RESEED_PERIODS = 8

# -- SMA ---------------------------------------------------------------------------------------
# [period, count, window sum, bars until the sum is rebuilt, ring[period]]
_SMA_TOTAL, _SMA_BARS, _SMA_RING = 2, 3, 4


def sma_state(period: int) -> np.ndarray:
    state = np.zeros(_SMA_RING + period)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def sma_update(state, x, out):
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    total = state[_SMA_TOTAL]
    bars = int(state[_SMA_BARS])
    ring = state[_SMA_RING:]
    inv = 1.0 / n
    m = x.shape[0]
    i = 0
    if c0 == 0:
        i = first_number(x, 0)
        out[:i] = np.nan
    if n == 1:
        # No averaging: a copy, exactly (as TA-Lib gives).
        out[i:] = x[i:]
        state[COUNT] = c0 + (m - i)
        return
    base = i - c0  # x[h + base] holds global position h >= c0
    g = c0
    while i < m and g < n:
        total += x[i]
        if g == n - 1:
            out[i] = total * inv
            bars = RESEED_PERIODS * n
        else:
            out[i] = np.nan
        i += 1
        g += 1
    while i < m:
        if bars > 1 and g - n >= c0:
            # The dropped value is in this chunk and no rebuild is due for k bars. Unsigned
            # indices spare numba's negative-index wraparound, a third of this loop's time.
            k = min(m - i, bars - 1)
            un = np.uint64(n)
            ahead = np.uint64(PREFETCH_AHEAD)
            for j in range(np.uint64(i), np.uint64(i + k)):
                prefetch(x, j + ahead)
                total += x[j] - x[j - un]
                out[j] = total * inv
            i += k
            g += k
            bars -= k
            continue
        bars -= 1
        if bars <= 0:
            bars = RESEED_PERIODS * n
            total = 0.0
            for h in range(g - n + 1, g + 1):
                total += x[h + base] if h >= c0 else ring[h % n]
        else:
            total += x[i] - (x[g - n + base] if g - n >= c0 else ring[(g - n) % n])
        out[i] = total * inv
        i += 1
        g += 1
    save_tail(x, ring, c0, base, g, n)
    state[COUNT] = g
    state[_SMA_TOTAL] = total
    state[_SMA_BARS] = bars


# -- SMA, exact ---------------------------------------------------------------------------------
# [period, count, window sum, its rounding error, bars until the sum is rebuilt, ring[period]]
_SMAX_SUM, _SMAX_ERR, _SMAX_BARS, _SMAX_RING = 2, 3, 4, 5


def sma_exact_state(period: int) -> np.ndarray:
    state = np.zeros(_SMAX_RING + period)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _two_sum(s, d):
    # s + d as the rounded sum and its exact rounding error (Knuth's TwoSum).
    t = s + d
    bp = t - s
    return t, (s - (t - bp)) + (d - bp)


@njit(cache=True, nogil=True, error_model="numpy")
def sma_exact_update(state, x, out):
    """The window mean as math.fsum(window) / n gives it, bit for bit in practice: the running
    sum carries its rounding errors (TwoSum, TwoDiff) instead of losing them, and each mean is
    one division of the corrected sum. About twice the arithmetic of `sma_update`."""
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    s = state[_SMAX_SUM]
    err = state[_SMAX_ERR]
    bars = int(state[_SMAX_BARS])
    ring = state[_SMAX_RING:]
    fn = np.float64(n)
    m = x.shape[0]
    i = 0
    if c0 == 0:
        i = first_number(x, 0)
        out[:i] = np.nan
    base = i - c0  # x[h + base] holds global position h >= c0
    g = c0
    while i < m:
        if g >= n and bars > 1 and g - n >= c0:
            # Steady state: the dropped value is in this chunk and no rebuild is due for k
            # bars. The same arithmetic as below, without its per-bar branches (unsigned
            # indices spare numba's negative-index wraparound): 4.1 -> 1.9 ns a bar.
            k = min(m - i, bars - 1)
            un = np.uint64(n)
            ahead = np.uint64(PREFETCH_AHEAD)
            for j in range(np.uint64(i), np.uint64(i + k)):
                prefetch(x, j + ahead)
                d, de = _two_sum(x[j], -x[j - un])
                s, e = _two_sum(s, d)
                err += e + de
                out[j] = (s + err) / fn
            i += k
            g += k
            bars -= k
            continue
        a = x[i]
        if g < n:
            s, e = _two_sum(s, a)
            err += e
            if g == n - 1:
                bars = RESEED_PERIODS * n
        else:
            bars -= 1
            if bars <= 0:
                # Rebuilt from the window itself: a NaN that passed through is forgotten, and
                # the error term's own roundings never build up.
                bars = RESEED_PERIODS * n
                s = 0.0
                err = 0.0
                for h in range(g - n + 1, g + 1):
                    s, e = _two_sum(s, x[h + base] if h >= c0 else ring[h % n])
                    err += e
            else:
                b = x[g - n + base] if g - n >= c0 else ring[(g - n) % n]
                d, de = _two_sum(a, -b)
                s, e = _two_sum(s, d)
                err += e + de
        out[i] = (s + err) / fn if g >= n - 1 else np.nan
        i += 1
        g += 1
    save_tail(x, ring, c0, base, g, n)
    state[COUNT] = g
    state[_SMAX_SUM] = s
    state[_SMAX_ERR] = err
    state[_SMAX_BARS] = bars


# -- EMA ---------------------------------------------------------------------------------------
# [period, count, value]: the running sum while seeding, then the average itself.
_EMA_VALUE = 2


def ema_state(period: int) -> np.ndarray:
    state = np.zeros(3)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def ema_update(state, x, out):
    n = int(state[PERIOD])
    g = int(state[COUNT])
    prev = state[_EMA_VALUE]
    # k + beta == 1 exactly (the order TA-Lib's MACD uses); beta*prev + k*x leaves one fused
    # multiply-add on the loop-carried chain, where TA-Lib's (x-prev)*k + prev has two steps.
    beta = (n - 1.0) / (n + 1.0)
    k = 1.0 - beta
    beta = 1.0 - k
    m = x.shape[0]
    i = 0
    if g == 0:
        i = first_number(x, 0)
        out[:i] = np.nan
    while i < m and g < n:
        prev += x[i]
        if g == n - 1:
            prev = prev / n
            out[i] = prev
        else:
            out[i] = np.nan
        g += 1
        i += 1
    ahead = np.uint64(PREFETCH_AHEAD)
    if n == 1:
        # No smoothing: a copy, as TA-Lib does (0*prev would turn an inf into NaN).
        for j in range(np.uint64(i), np.uint64(m)):
            prev = x[j]
            out[j] = prev
    else:
        for j in range(np.uint64(i), np.uint64(m)):
            prefetch(x, j + ahead)
            prev = fma(beta, prev, k * x[j])
            out[j] = prev
    state[COUNT] = g + (m - i)
    state[_EMA_VALUE] = prev


# -- WMA ---------------------------------------------------------------------------------------
# [period, count, weighted sum, window sum, bars until both are rebuilt, ring[period]]
# Between bars the weighted sum holds the window with weights 0..period-1 from the oldest, so
# adding the next value at weight `period` completes the next window.
_WMA_WSUM, _WMA_SUM, _WMA_BARS, _WMA_RING = 2, 3, 4, 5


def wma_state(period: int) -> np.ndarray:
    state = np.zeros(_WMA_RING + period)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def wma_update(state, x, out):
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    wsum = state[_WMA_WSUM]
    wsub = state[_WMA_SUM]
    bars = int(state[_WMA_BARS])
    ring = state[_WMA_RING:]
    fn = float(n)
    inv_div = 2.0 / (fn * (fn + 1.0))
    m = x.shape[0]
    i = 0
    if c0 == 0:
        i = first_number(x, 0)
        out[:i] = np.nan
    if n == 1:
        out[i:] = x[i:]  # weights of 1: a copy, exactly (as TA-Lib gives)
        state[COUNT] = c0 + (m - i)
        return
    base = i - c0
    g = c0
    while i < m and g < n:
        v = x[i]
        wsub += v
        if g == n - 1:
            t = v * fn
            out[i] = (wsum + t) * inv_div
            wsum += t - wsub
            bars = WMA_RESEED_PERIODS * n - 1
        else:
            wsum += v * (g + 1.0)
            out[i] = np.nan
        i += 1
        g += 1
    while i < m:
        if bars > 1 and g - n >= c0:
            k = min(m - i, bars - 1)
            un = np.uint64(n)
            ahead = np.uint64(PREFETCH_AHEAD)
            for j in range(np.uint64(i), np.uint64(i + k)):
                prefetch(x, j + ahead)
                v = x[j]
                wsub += v - x[j - un]
                t = v * fn
                out[j] = (wsum + t) * inv_div
                wsum += t - wsub
            i += k
            g += k
            bars -= k
            continue
        bars -= 1
        if bars <= 0:
            bars = WMA_RESEED_PERIODS * n
            wsub = 0.0
            full = 0.0
            w = 1.0
            for h in range(g - n + 1, g + 1):
                y = x[h + base] if h >= c0 else ring[h % n]
                wsub += y
                full += y * w
                w += 1.0
            out[i] = full * inv_div
            wsum = full - wsub
        else:
            v = x[i]
            wsub += v - (x[g - n + base] if g - n >= c0 else ring[(g - n) % n])
            t = v * fn
            out[i] = (wsum + t) * inv_div
            wsum += t - wsub
        i += 1
        g += 1
    save_tail(x, ring, c0, base, g, n)
    state[COUNT] = g
    state[_WMA_WSUM] = wsum
    state[_WMA_SUM] = wsub
    state[_WMA_BARS] = bars
