"""Jitted rolling highest and lowest value (TA-Lib's MAX and MIN) in their incremental state form.

Same contract as `_moving`: `extreme_update(state, x, out, is_max)` consumes `x` in order,
writes one value per input and advances `state` in place; leading NaNs are skipped.

One bar at a time, the state is a monotonic deque of the window's candidates (amortized O(1) a
bar). A long chunk is instead scanned in blocks of one period (van Herk / Gil-Werman: a suffix
scan of each block and a prefix scan of the next, a fixed three comparisons a value and no
data-dependent pops), then the deque is rebuilt from the chunk's last window. Both give the
same values: an extremum involves no rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PERIOD, COUNT = 0, 1
# [period, count, deque head, deque size, values[period], global positions[period]]
_HEAD, _SIZE, _DEQUE = 2, 3, 4

# Chunks at least this many periods long take the block scan.
_BLOCK_MIN_PERIODS = 4


def extreme_state(period: int) -> np.ndarray:
    state = np.zeros(_DEQUE + 2 * period)
    state[PERIOD] = period
    return state


@njit(cache=True, inline="always")
def _better(a, b, is_max):
    return a > b if is_max else a < b


@njit(cache=True)
def extreme_update(state, x, out, is_max):
    n = int(state[PERIOD])
    c0 = int(state[COUNT])
    head = int(state[_HEAD])
    size = int(state[_SIZE])
    vals = state[_DEQUE : _DEQUE + n]
    pos = state[_DEQUE + n : _DEQUE + 2 * n]
    m = x.shape[0]
    i0 = 0
    if c0 == 0:
        while i0 < m and np.isnan(x[i0]):
            out[i0] = np.nan
            i0 += 1
    block = m - i0 >= _BLOCK_MIN_PERIODS * n and n > 1
    # Bars whose window reaches back into earlier chunks go through the deque.
    i1 = min(m, i0 + n - 1) if block else m
    g = c0
    for i in range(i0, i1):
        v = x[i]
        if size > 0 and pos[head] <= g - n:
            head += 1
            if head == n:
                head = 0
            size -= 1
        while size > 0:
            back = head + size - 1
            if back >= n:
                back -= n
            if _better(vals[back], v, is_max):
                break
            size -= 1
        back = head + size
        if back >= n:
            back -= n
        vals[back] = v
        pos[back] = g
        size += 1
        out[i] = vals[head] if g >= n - 1 else np.nan
        g += 1
    if block:
        xs = x[i0:]
        o = out[i0:]
        total = m - i0
        suf = np.empty(n)
        pre = np.empty(n)
        b = 0
        while b + n <= total:
            best = xs[b + n - 1]
            suf[n - 1] = best
            for t in range(n - 2, -1, -1):
                y = xs[b + t]
                if _better(y, best, is_max):
                    best = y
                suf[t] = best
            o[b + n - 1] = suf[0]
            na = min(n - 1, total - (b + n))
            if na > 0:
                best = xs[b + n]
                pre[0] = best
                for t in range(1, na):
                    y = xs[b + n + t]
                    if _better(y, best, is_max):
                        best = y
                    pre[t] = best
                for s in range(1, na + 1):
                    a = suf[s]
                    p = pre[s - 1]
                    o[b + s + n - 1] = p if _better(p, a, is_max) else a
            b += n
        # Rebuild the deque from the last window.
        g = c0 + total
        head = 0
        size = 0
        for h in range(g - n, g):
            v = x[h - c0 + i0]
            while size > 0 and not _better(vals[size - 1], v, is_max):
                size -= 1
            vals[size] = v
            pos[size] = h
            size += 1
    state[COUNT] = g
    state[_HEAD] = head
    state[_SIZE] = size
