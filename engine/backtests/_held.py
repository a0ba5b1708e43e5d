"""Bars a backtest replays in place: the history already in this process's memory, read through
the `ShmArray` interface (spans, rows, windows) without a copy into shared memory.

A replay runs in one process, so the strategy's `ohlcv` views and indicator inputs can be views
of the loaded bars themselves: the bars are held once, not twice.
"""

from __future__ import annotations

import numpy as np

from engine.dtypes import ohlc_dtype
from engine.shm import _EPOCH, _FIRST, _LAST, _SIZE, ShmArray

__all__ = ["HeldBars", "numbered"]

_CHUNK = 1 << 20  # rows compared at a time: the check allocates no array the size of the bars


class HeldBars(ShmArray):
    """`rows` (ohlc_dtype, `index` numbering them from 0) as a read-only, full, never-rolling
    ShmArray of this process: nothing to unlink, no segment name, no token to share."""

    def __init__(self, rows: np.ndarray) -> None:
        view = rows.view()
        view.flags.writeable = False
        header = np.zeros(8, dtype=np.int64)
        header[_FIRST], header[_LAST], header[_SIZE] = 0, len(rows), max(len(rows), 1)
        header[_EPOCH] = 0
        self._name = "<bars held in this process>"
        self._dtype = rows.dtype
        self._size = max(len(rows), 1)
        self._mmap = None
        self._owner = False
        self._readonly = True
        self._closed = False
        self._unlinked = True
        self._header = header
        self._hv = memoryview(header)
        self._buf = view
        self._has_index = True


def numbered(bars: np.ndarray) -> bool:
    """Whether `bars` are ohlc_dtype rows whose `index` counts 0, 1, 2, ... (as a segment
    filled from its start writes them): then they replay in place."""
    if bars.dtype != ohlc_dtype:
        return False
    index = bars["index"]
    for lo in range(0, len(bars), _CHUNK):
        part = index[lo:lo + _CHUNK]
        if not np.array_equal(part, np.arange(lo, lo + len(part))):
            return False
    return True
