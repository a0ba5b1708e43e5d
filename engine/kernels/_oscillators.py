"""Jitted oscillators (RSI, MACD) in their incremental state form.

Same contract as `_moving`: `kernel(state, x, *outs)` consumes `x` in order, writes one value
per input into each output and advances `state` in place; leading NaNs are skipped. No I/O, no
allocation per value.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels._common import COUNT, PERIOD, PREFETCH_AHEAD, first_number, fma, prefetch

# -- RSI ---------------------------------------------------------------------------------------
# [period, count, previous value, average gain, average loss]
_RSI_PREV, _RSI_GAIN, _RSI_LOSS = 2, 3, 4


def rsi_state(period: int) -> np.ndarray:
    state = np.zeros(5)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def rsi_update(state, x, out):
    n = int(state[PERIOD])
    g = int(state[COUNT])
    prev = state[_RSI_PREV]
    gain = state[_RSI_GAIN]
    loss = state[_RSI_LOSS]
    inv = 1.0 / n
    # Wilder's smoothing avg = (avg*(n-1) + new)/n, as avg*beta + new/n: one fused
    # multiply-add on each loop-carried chain where TA-Lib has a multiply, an add and a
    # multiply (the results differ in the last bits only).
    beta = (n - 1.0) * inv
    m = x.shape[0]
    i = 0
    if g == 0:
        i = first_number(x, 0)
        out[:i] = np.nan
    while i < m and g <= n:
        v = x[i]
        if g == 0:
            out[i] = np.nan
        else:
            d = v - prev
            up = d if d > 0.0 else 0.0
            gain += up
            loss += up - d
            if g == n:
                gain *= inv
                loss *= inv
                total = gain + loss
                # TA-Lib 0.8.1 answers 0 when nothing has moved (0/0).
                out[i] = 100.0 * (gain / total) if total > 0.0 else 0.0
            else:
                out[i] = np.nan
        prev = v
        g += 1
        i += 1
    ahead = np.uint64(PREFETCH_AHEAD)
    for j in range(np.uint64(i), np.uint64(m)):
        prefetch(x, j + ahead)
        v = x[j]
        d = v - prev
        prev = v
        up = d if d > 0.0 else 0.0
        gain = fma(gain, beta, up * inv)
        loss = fma(loss, beta, (up - d) * inv)
        total = gain + loss
        out[j] = 100.0 * (gain / total) if total > 0.0 else 0.0
    state[COUNT] = g + (m - i)
    state[_RSI_PREV] = prev
    state[_RSI_GAIN] = gain
    state[_RSI_LOSS] = loss


# -- MACD --------------------------------------------------------------------------------------
# [fast, count, slow, signal, fast ema, slow ema, signal ema]
# While seeding, the three EMA slots hold the running sums of their seed windows: the slow EMA
# is seeded with the mean of the first `slow` values, the fast one with the mean of the last
# `fast` of those (both seed windows end on the same bar, as in TA-Lib), and the signal line with
# the mean of the first `signal` MACD values.
_MACD_SLOW, _MACD_SIGNAL, _MACD_FAST_EMA, _MACD_SLOW_EMA, _MACD_SIGNAL_EMA = 2, 3, 4, 5, 6


def macd_state(fast: int, slow: int, signal: int) -> np.ndarray:
    if slow < fast:
        fast, slow = slow, fast  # TA-Lib swaps them too
    state = np.zeros(7)
    state[PERIOD] = fast
    state[_MACD_SLOW] = slow
    state[_MACD_SIGNAL] = signal
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def macd_update(state, x, line_out, signal_out, hist_out):
    nf = int(state[PERIOD])
    ns = int(state[_MACD_SLOW])
    nsig = int(state[_MACD_SIGNAL])
    g = int(state[COUNT])
    pf = state[_MACD_FAST_EMA]
    ps = state[_MACD_SLOW_EMA]
    psig = state[_MACD_SIGNAL_EMA]
    # k + beta == 1 exactly, as TA-Lib's MACD computes them; beta*prev + k*x keeps one fused
    # multiply-add on each loop-carried chain.
    bf = (nf - 1.0) / (nf + 1.0)
    kf = 1.0 - bf
    bf = 1.0 - kf
    bs = (ns - 1.0) / (ns + 1.0)
    ks = 1.0 - bs
    bs = 1.0 - ks
    bg = (nsig - 1.0) / (nsig + 1.0)
    kg = 1.0 - bg
    bg = 1.0 - kg
    first = ns - 1 + nsig - 1  # the first bar with all three outputs
    m = x.shape[0]
    i = 0
    if g == 0:
        i = first_number(x, 0)
        line_out[:i] = np.nan
        signal_out[:i] = np.nan
        hist_out[:i] = np.nan
    while i < m and g <= first:
        v = x[i]
        if g < ns:
            ps += v
            if g >= ns - nf:
                pf += v
            if g == ns - 1:
                ps = ps / ns
                pf = pf / nf
        else:
            pf = fma(bf, pf, kf * v)
            ps = fma(bs, ps, ks * v)
        if g >= ns - 1:
            macd = pf - ps
            psig += macd
            if g == first:
                psig = psig / nsig
                line_out[i] = macd
                signal_out[i] = psig
                hist_out[i] = macd - psig
            else:
                line_out[i] = np.nan
                signal_out[i] = np.nan
                hist_out[i] = np.nan
        else:
            line_out[i] = np.nan
            signal_out[i] = np.nan
            hist_out[i] = np.nan
        g += 1
        i += 1
    ahead = np.uint64(PREFETCH_AHEAD)
    if nsig == 1:
        for j in range(np.uint64(i), np.uint64(m)):
            prefetch(x, j + ahead)
            v = x[j]
            pf = fma(bf, pf, kf * v)
            ps = fma(bs, ps, ks * v)
            macd = pf - ps
            psig = macd
            line_out[j] = macd
            signal_out[j] = macd
            hist_out[j] = 0.0
    else:
        for j in range(np.uint64(i), np.uint64(m)):
            prefetch(x, j + ahead)
            v = x[j]
            pf = fma(bf, pf, kf * v)
            ps = fma(bs, ps, ks * v)
            macd = pf - ps
            psig = fma(bg, psig, kg * macd)
            line_out[j] = macd
            signal_out[j] = psig
            hist_out[j] = macd - psig
    state[COUNT] = g + (m - i)
    state[_MACD_FAST_EMA] = pf
    state[_MACD_SLOW_EMA] = ps
    state[_MACD_SIGNAL_EMA] = psig
