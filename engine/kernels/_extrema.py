"""Jitted rolling highest and lowest value (TA-Lib's MAX and MIN) in their incremental state form.

Same contract as `_moving`: `extreme_update(state, x, out, is_max)` consumes `x` in order,
writes one value per input and advances `state` in place; leading NaNs are skipped. The deque
compares sign-flipped values, so one code path serves the highest and the lowest (exactly).

One bar at a time, the state is a monotonic deque of the window's candidates (amortized O(1) a
bar). A long chunk is scanned in blocks instead (van Herk / Gil-Werman: a suffix scan of each
block of one period and a prefix scan of the next, three comparisons a value whatever the
period, no data-dependent branch), then the deque is rebuilt from the chunk's last window. Both
give the same values: an extremum involves no rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.kernels._common import COUNT, PERIOD, PREFETCH_AHEAD, first_number, prefetch

# [period, count, deque head, deque size, values[period], global positions[period]]
# The deque holds sign-adjusted values (negated for the lowest).
_HEAD, _SIZE, _DEQUE = 2, 3, 4

# Chunks at least this many periods long take the block scan.
_BLOCK_MIN_PERIODS = 4


def extreme_state(period: int) -> np.ndarray:
    state = np.zeros(_DEQUE + 2 * period)
    state[PERIOD] = period
    return state


@njit(cache=True, nogil=True, error_model="numpy")
def _scan_max(x, out, n, i0, m):
    """out[j] = max(x[j-n+1 .. j]) for every window inside x[i0:m], by van Herk / Gil-Werman:
    per block of n, a suffix scan backward, then a prefix scan of the next block fused with
    the combination. Unsigned indices skip numba's negative-index wraparound."""
    total = m - i0
    suf = np.empty(n)
    b = 0
    while b + n <= total:
        end = np.uint64(i0 + b + n - 1)
        best = x[end]
        suf[n - 1] = best
        for t in range(1, n):
            y = x[end - np.uint64(t)]
            best = y if y > best else best
            suf[n - 1 - t] = best
        out[end] = best
        best = -np.inf
        for s in range(1, min(n, total - b - n + 1)):
            j = end + np.uint64(s)
            prefetch(x, j + np.uint64(PREFETCH_AHEAD))
            y = x[j]
            best = y if y > best else best
            a = suf[s]
            out[j] = best if best > a else a
        b += n


@njit(cache=True, nogil=True, error_model="numpy")
def _scan_min(x, out, n, i0, m):
    """`_scan_max` for the minimum (spelled out: a sign flip per value costs 15%)."""
    total = m - i0
    suf = np.empty(n)
    b = 0
    while b + n <= total:
        end = np.uint64(i0 + b + n - 1)
        best = x[end]
        suf[n - 1] = best
        for t in range(1, n):
            y = x[end - np.uint64(t)]
            best = y if y < best else best
            suf[n - 1 - t] = best
        out[end] = best
        best = np.inf
        for s in range(1, min(n, total - b - n + 1)):
            j = end + np.uint64(s)
            prefetch(x, j + np.uint64(PREFETCH_AHEAD))
            y = x[j]
            best = y if y < best else best
            a = suf[s]
            out[j] = best if best < a else a
        b += n


@njit(cache=True, nogil=True, error_model="numpy")
def extreme_update(state, x, out, is_max):
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    head = int(state[_HEAD])
    size = int(state[_SIZE])
    vals = state[_DEQUE : _DEQUE + n]
    pos = state[_DEQUE + n : _DEQUE + 2 * n]
    sgn = 1.0 if is_max else -1.0
    m = x.shape[0]
    i0 = 0
    if c0 == 0:
        i0 = first_number(x, 0)
        out[:i0] = np.nan
    block = m - i0 >= _BLOCK_MIN_PERIODS * n and n > 1
    # Bars whose window reaches back into earlier chunks (or all, for a short chunk) go
    # through the deque.
    i1 = min(m, i0 + n - 1) if block else m
    g = c0
    for i in range(i0, i1):
        v = sgn * x[i]
        if size > 0 and pos[head] <= g - n:
            head += 1
            if head == n:
                head = 0
            size -= 1
        while size > 0:
            back = head + size - 1
            if back >= n:
                back -= n
            if vals[back] > v:
                break
            size -= 1
        back = head + size
        if back >= n:
            back -= n
        vals[back] = v
        pos[back] = g
        size += 1
        out[i] = sgn * vals[head] if g >= n - 1 else np.nan
        g += 1
    if block:
        if is_max:
            _scan_max(x, out, n, i0, m)
        else:
            _scan_min(x, out, n, i0, m)
        # Rebuild the deque from the last window.
        g = c0 + (m - i0)
        head = 0
        size = 0
        for h in range(g - n, g):
            v = sgn * x[h - c0 + i0]
            while size > 0 and not vals[size - 1] > v:
                size -= 1
            vals[size] = v
            pos[size] = h
            size += 1
    state[COUNT] = g
    state[_HEAD] = head
    state[_SIZE] = size
