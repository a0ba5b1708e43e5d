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

from engine.kernels._common import COUNT, PERIOD, PREFETCH_AHEAD, prefetch

RESEED_PERIODS = 32
# Rebuild a rolling window's sums when a departing volume exceeds this multiple of what
# remains: its rounding residue would otherwise swamp the rest.
_OUTLIER = 1e4

# -- session-anchored --------------------------------------------------------------------------
# [session length (s), count, session offset (s), session start (s), next session start (s),
#  sum(p*v), sum(v)]
_S_OFFSET, _S_START, _S_END, _S_PV, _S_V = 2, 3, 4, 5, 6


def session_vwap_state(session: float, offset: float) -> np.ndarray:
    state = np.zeros(7)
    state[PERIOD] = session
    state[_S_OFFSET] = offset
    state[_S_START] = np.inf  # no session yet: the first bar starts one
    state[_S_END] = -np.inf
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def session_vwap_update(state, price, volume, time, out):
    length = state[PERIOD]
    offset = state[_S_OFFSET]
    start = state[_S_START]
    end = state[_S_END]
    spv = state[_S_PV]
    sv = state[_S_V]
    m = price.shape[0]
    ahead = np.uint64(PREFETCH_AHEAD)
    for j in range(np.uint64(0), np.uint64(m)):
        prefetch(price, j + ahead)
        prefetch(volume, j + ahead)
        prefetch(time, j + ahead)
        t = time[j]
        if not (start <= t < end):
            # A new session (or time went backwards): find its bounds, restart the sums.
            start = math.floor((t - offset) / length) * length + offset
            end = start + length
            spv = 0.0
            sv = 0.0
        p = price[j]
        v = volume[j]
        if v > 0.0 and p == p:
            spv += p * v
            sv += v
        out[j] = spv / sv if sv > 0.0 else np.nan
    state[COUNT] += m
    state[_S_START] = start
    state[_S_END] = end
    state[_S_PV] = spv
    state[_S_V] = sv


# -- rolling -----------------------------------------------------------------------------------
# [period, count, sum(p*v), sum(v), bars until the sums are rebuilt, bars with volume in the
#  window, prices[period], volumes[period]]
_R_PV, _R_V, _R_BARS, _R_LIVE, _R_RING = 2, 3, 4, 5, 6


def rolling_vwap_state(period: int) -> np.ndarray:
    state = np.zeros(_R_RING + 2 * period)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy")
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
    un = np.uint64(n)
    ahead = np.uint64(PREFETCH_AHEAD)
    # Global position h of this chunk is price[h - c0]; the `period` before c0 are in the ring.
    for j in range(np.uint64(0), np.uint64(m)):
        prefetch(price, j + ahead)
        prefetch(volume, j + ahead)
        g = c0 + int(j)
        p = price[j]
        v = volume[j]
        if v > 0.0 and p == p:
            spv += p * v
            sv += v
            live += 1
        if g < n - 1:
            out[j] = np.nan
            continue
        if g == n - 1:
            bars = RESEED_PERIODS * n
        else:
            if g - n >= c0:
                po = price[j - un]
                vo = volume[j - un]
            else:
                po = rp[(g - n) % n]
                vo = rv[(g - n) % n]
            if vo > 0.0 and po == po:
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
            elif bars <= 0 or vo > _OUTLIER * sv:
                # Periodically, and when a bar far heavier than what remains leaves, rebuild
                # the sums from the window, oldest first.
                bars = RESEED_PERIODS * n
                spv = 0.0
                sv = 0.0
                for h in range(g - n + 1, g + 1):
                    if h >= c0:
                        po = price[h - c0]
                        vo = volume[h - c0]
                    else:
                        po = rp[h % n]
                        vo = rv[h % n]
                    if vo > 0.0 and po == po:
                        spv += po * vo
                        sv += vo
        out[j] = spv / sv if live > 0 else np.nan
    g = c0 + m
    for h in range(max(c0, g - n), g):
        rp[h % n] = price[h - c0]
        rv[h % n] = volume[h - c0]
    state[COUNT] = g
    state[_R_PV] = spv
    state[_R_V] = sv
    state[_R_BARS] = bars
    state[_R_LIVE] = live
