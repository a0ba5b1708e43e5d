"""Jitted volume-weighted average price, anchored to sessions or over a rolling window of bars.

Same contract as `_moving`: `kernel(state, inputs..., out)` consumes the inputs in order, writes
one value per bar and advances `state` in place. A bar contributes price*volume and volume only
when its volume is positive and its price is a number, so the flat zero-volume bars the sampler
writes for quiet periods (whose price may be 0 or NaN) change nothing; a window or session with
no volume yet is NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

PERIOD, COUNT = 0, 1
RESEED_PERIODS = 32

# -- session-anchored --------------------------------------------------------------------------
# [session length (s), count, session offset (s), current session number, sum(p*v), sum(v)]
_S_OFFSET, _S_SESSION, _S_PV, _S_V = 2, 3, 4, 5


def session_vwap_state(session: float, offset: float) -> np.ndarray:
    state = np.zeros(6)
    state[PERIOD] = session
    state[_S_OFFSET] = offset
    state[_S_SESSION] = np.nan
    return state


@njit(cache=True)
def session_vwap_update(state, price, volume, time, out):
    length = state[PERIOD]
    offset = state[_S_OFFSET]
    session = state[_S_SESSION]
    spv = state[_S_PV]
    sv = state[_S_V]
    m = price.shape[0]
    for i in range(m):
        s = math.floor((time[i] - offset) / length)
        if s != session:
            session = s
            spv = 0.0
            sv = 0.0
        p = price[i]
        v = volume[i]
        if v > 0.0 and p == p:
            spv += p * v
            sv += v
        out[i] = spv / sv if sv > 0.0 else np.nan
    state[COUNT] += m
    state[_S_SESSION] = session
    state[_S_PV] = spv
    state[_S_V] = sv


# -- rolling -----------------------------------------------------------------------------------
# [period, count, sum(p*v), sum(v), bars_to_reseed, bars with volume in the window,
#  prices[period], volumes[period]]
_R_PV, _R_V, _R_BARS, _R_LIVE, _R_RING = 2, 3, 4, 5, 6


def rolling_vwap_state(period: int) -> np.ndarray:
    state = np.zeros(_R_RING + 2 * period)
    state[PERIOD] = period
    return state


@njit(cache=True, inline="always")
def _counts(p, v):
    return v > 0.0 and p == p


@njit(cache=True)
def rolling_vwap_update(state, price, volume, out):
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    spv = state[_R_PV]
    sv = state[_R_V]
    bars = int(state[_R_BARS])
    live = int(state[_R_LIVE])
    rp = state[_R_RING : _R_RING + n]
    rv = state[_R_RING + n : _R_RING + 2 * n]
    m = price.shape[0]
    g = c0
    for i in range(m):
        p = price[i]
        v = volume[i]
        if _counts(p, v):
            spv += p * v
            sv += v
            live += 1
        if g < n - 1:
            out[i] = np.nan
            g += 1
            continue
        if g == n - 1:
            bars = RESEED_PERIODS * n
        else:
            h = g - n
            if h >= c0:
                po = price[h - c0]
                vo = volume[h - c0]
            else:
                po = rp[h % n]
                vo = rv[h % n]
            if _counts(po, vo):
                spv -= po * vo
                sv -= vo
                live -= 1
            else:
                vo = 0.0
            bars -= 1
            if live == 0:
                # Exactly empty, whatever residue the running sums kept.
                spv = 0.0
                sv = 0.0
            elif bars <= 0 or vo > 1e4 * sv:
                # Periodically, and when a bar far heavier than what remains leaves (its
                # rounding residue would swamp the rest), rebuild the sums from the window.
                bars = RESEED_PERIODS * n
                spv = 0.0
                sv = 0.0
                for k in range(g - n + 1, g + 1):
                    if k >= c0:
                        po = price[k - c0]
                        vo = volume[k - c0]
                    else:
                        po = rp[k % n]
                        vo = rv[k % n]
                    if _counts(po, vo):
                        spv += po * vo
                        sv += vo
        out[i] = spv / sv if live > 0 else np.nan
        g += 1
    for h in range(max(c0, g - n), g):
        rp[h % n] = price[h - c0]
        rv[h % n] = volume[h - c0]
    state[COUNT] = g
    state[_R_PV] = spv
    state[_R_V] = sv
    state[_R_BARS] = bars
    state[_R_LIVE] = live
