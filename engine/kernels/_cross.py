"""Jitted crossover and crossunder detection in their incremental state form.

`cross_update(state, a, b, out, above)` marks bar i when `a` crosses above `b` (`above`) or
below it: a[i] > b[i] and a[i-1] <= b[i-1] for a crossover. `cross_sign_update` gives both
directions in one series: +1.0 up, -1.0 down, 0.0 neither. A comparison with NaN is false, so
nothing crosses on the bar a series leaves its warm-up, or next to a missing value. `out` may be
bool or float (1.0 / 0.0). No I/O, no allocation.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels._common import PREFETCH_AHEAD, prefetch

# [count, previous a, previous b]
_COUNT, _PREV_A, _PREV_B = 0, 1, 2


def cross_state() -> np.ndarray:
    state = np.zeros(3)
    state[_PREV_A] = np.nan
    state[_PREV_B] = np.nan
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def cross_update(state, a, b, out, above):
    pa = state[_PREV_A]
    pb = state[_PREV_B]
    m = a.shape[0]
    ahead = np.uint64(PREFETCH_AHEAD)
    for i in range(np.uint64(0), np.uint64(m)):
        prefetch(a, i + ahead)
        prefetch(b, i + ahead)
        x = a[i]
        y = b[i]
        if above:
            out[i] = x > y and pa <= pb
        else:
            out[i] = x < y and pa >= pb
        pa = x
        pb = y
    state[_COUNT] += m
    state[_PREV_A] = pa
    state[_PREV_B] = pb


@njit(cache=True, nogil=True, error_model="numpy")
def cross_sign_update(state, a, b, out):
    pa = state[_PREV_A]
    pb = state[_PREV_B]
    m = a.shape[0]
    ahead = np.uint64(PREFETCH_AHEAD)
    for i in range(np.uint64(0), np.uint64(m)):
        prefetch(a, i + ahead)
        prefetch(b, i + ahead)
        x = a[i]
        y = b[i]
        # Branch-free: crosses are rare and unpredictable; both tests are false next to NaN.
        out[i] = np.float64((x > y) & (pa <= pb)) - np.float64((x < y) & (pa >= pb))
        pa = x
        pb = y
    state[_COUNT] += m
    state[_PREV_A] = pa
    state[_PREV_B] = pb
