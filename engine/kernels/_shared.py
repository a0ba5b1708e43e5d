"""Series shared between the parameter sets of one sweep: `sma(close, 20)` computed once.

Inside `sharing(pool)` (entered by each worker thread of a fast-path sweep) the whole-series
functions of `_functions` look their result up in `pool` by function, input arrays (by
identity: the sweep hands every set the same column objects) and parameters, and compute it
only on a miss. A grid of 10 fast and 19 slow periods then computes 29 averages instead of 348.
Shared results are read-only, so no parameter set can change another's signals.

Outside `sharing`, and for calls writing into `out=`, nothing is shared. Nothing here computes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

_local = threading.local()


class SeriesPool:
    """Results of whole-series kernel calls, keyed by call, safe to share between threads
    (one thread computes a missing key while the others asking for it wait)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[tuple, Any] = {}
        self._busy: dict[tuple, threading.Event] = {}
        # The input arrays of every key, held so that their ids stay theirs.
        self._inputs: list[Any] = []
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, inputs: tuple, compute: Callable[[], Any]) -> Any:
        while True:
            with self._lock:
                if key in self._done:
                    self.hits += 1
                    return self._done[key]
                event = self._busy.get(key)
                if event is None:
                    event = self._busy[key] = threading.Event()
                    break
            # Another thread computes it; if that fails, this one tries in turn.
            event.wait()
        try:
            value = compute()
            for arr in value if isinstance(value, tuple) else (value,):
                if isinstance(arr, np.ndarray):
                    arr.setflags(write=False)
            with self._lock:
                self._done[key] = value
                self._inputs.append(inputs)
                self.misses += 1
            return value
        finally:
            with self._lock:
                del self._busy[key]
            event.set()

    def __len__(self) -> int:
        return len(self._done)


@contextmanager
def sharing(pool: SeriesPool) -> Iterator[SeriesPool]:
    """Share whole-series results through `pool` in this thread until the block ends."""
    before = getattr(_local, "pool", None)
    _local.pool = pool
    try:
        yield pool
    finally:
        _local.pool = before


def in_shared_pool() -> bool:
    """True in a thread sharing series (a sweep's worker: its cores are taken)."""
    return getattr(_local, "pool", None) is not None


def _part(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("array", id(value))
    try:
        hash(value)
    except TypeError:
        return None  # a list or the like: not shared
    return (type(value).__name__, value)


def shared(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Let `fn` (a whole-series function with an `out=` keyword) use the thread's pool."""
    import functools

    @functools.wraps(fn)
    def call(*args: Any, out: Any = None, **kwargs: Any) -> Any:
        pool = getattr(_local, "pool", None)
        if pool is None or out is not None:
            return fn(*args, out=out, **kwargs)
        parts = [_part(a) for a in args] + [_part(v) for _, v in sorted(kwargs.items())]
        if None in parts:
            return fn(*args, **kwargs)
        key = (fn.__name__, *parts, *sorted(kwargs))
        return pool.get(key, (args, kwargs), lambda: fn(*args, **kwargs))

    return call
