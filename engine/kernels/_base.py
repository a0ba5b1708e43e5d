"""The Python face of a kernel: an indicator object that holds its state between calls.

An `Indicator` owns one float64 state array and calls its jitted kernel on whole arrays (no
per-value Python), so `run(history)` then `update(newest)` costs time in proportion to the new
bars only. Inputs are used in place, strided views included (a field of a shared-memory record
array); outputs go to fresh arrays or to the caller's `out=` arrays, which may be fields of
another shared-memory array. Nothing here reads a clock, does I/O or imports an async library.
"""

from __future__ import annotations

import mmap
import numbers
from typing import Any, ClassVar

import numpy as np

from engine.kernels import _plan

Series = Any  # a 1-D array-like of numbers, or one number for a one-bar update

# Outputs from this size up are mapped with their pages already in place. Faulting in fresh
# pages one at a time from inside a kernel's loop stalls a latency-bound recurrence far more
# than the fault itself costs (measured: RSI over 10M bars, 4.7 ns a bar into np.empty, 3.6
# into pre-populated pages, 2.4 into pages already touched). 4 MiB is where numpy itself starts
# asking for huge pages.
_POPULATE_BYTES = 4 << 20
_MADV_POPULATE_WRITE = 23  # Linux 5.14+; not named by Python 3.11's mmap module
_populate_ok = hasattr(mmap, "MADV_HUGEPAGE")
_FLOAT64 = np.dtype(np.float64)


def empty(m: int, dtype: np.dtype = _FLOAT64) -> np.ndarray:
    """Return an uninitialized array of `m` values, its memory touched in advance when large."""
    global _populate_ok
    nbytes = m * dtype.itemsize
    if nbytes < _POPULATE_BYTES or not _populate_ok:
        return np.empty(m, dtype=dtype)
    try:
        mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mm.madvise(mmap.MADV_HUGEPAGE)
        mm.madvise(_MADV_POPULATE_WRITE)
    except (OSError, ValueError):
        _populate_ok = False  # an older kernel: plain arrays from now on
        return np.empty(m, dtype=dtype)
    return np.frombuffer(mm, dtype=dtype)


def check_period(name: str, value: object, minimum: int = 1) -> int:
    """Return `value` as an int of at least `minimum` bars, or raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


# What counts as one number in a one-bar update (concrete types: an isinstance test against
# numbers.Real goes through the ABC machinery, a noticeable part of a 2 us update).
NUMBER_TYPES = (float, int, np.floating, np.integer)


def as_input(series: Series, numeric_ok: bool = False) -> np.ndarray:
    if type(series) is np.ndarray and series.dtype == np.float64 and series.ndim == 1:
        return series  # the common case, strided views included: used in place
    arr = np.asarray(series)
    if arr.ndim != 1:
        raise ValueError(f"a series must be 1-D, got shape {arr.shape}")
    if arr.dtype != np.float64 and not (numeric_ok and arr.dtype.kind in "iu"):
        # Only a non-float64 input is copied.
        arr = arr.astype(np.float64)
    return arr


class Indicator:
    """Base of every indicator: a kernel, its parameters and the state it carries between calls.

    Subclasses set `kind` (the name `SignalSet` specs use), `inputs` (the OHLCV fields read by
    default, in kernel order), `outputs` (the names of the series produced) and `lookback` (the
    number of leading NaN outputs, counted from the first bar whose inputs are all numbers).
    """

    kind: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ("close",)
    outputs: ClassVar[tuple[str, ...]] = ("value",)
    out_dtype: ClassVar[np.dtype] = np.dtype(np.float64)
    # Inputs that may stay integer (epoch-second times), by position.
    _numeric_inputs: ClassVar[frozenset[int]] = frozenset()

    lookback: int
    state: np.ndarray

    def __init__(self) -> None:
        self.state = self._new_state()
        self._one_in = tuple(np.empty(1) for _ in self.inputs)
        self._one_out = tuple(np.empty(1, dtype=self.out_dtype) for _ in self.outputs)

    # -- to implement ----------------------------------------------------------------------------

    def _new_state(self) -> np.ndarray:
        raise NotImplementedError

    def _call(self, ins: tuple[np.ndarray, ...], outs: tuple[np.ndarray, ...]) -> None:
        raise NotImplementedError

    def _params(self) -> tuple:
        raise NotImplementedError

    # -- public ----------------------------------------------------------------------------------

    @property
    def bars(self) -> int:
        """Return how many bars the state has consumed (leading NaNs excluded)."""
        return int(self.state[self._count_slot])

    _count_slot: ClassVar[int] = 1

    def reset(self) -> None:
        """Forget every bar seen: the next update starts a new series."""
        self.state = self._new_state()

    def copy(self) -> Indicator:
        """Return an independent indicator at the same point of the same series (for replay)."""
        clone = type(self)(*self._params())
        clone.state = self.state.copy()
        return clone

    def run(self, *series: Series, out: Any = None) -> Any:
        """Compute over a whole series from a fresh state; see `update` for arguments."""
        if _plan.tracing_now() and any(type(s) is _plan.Stand for s in series):
            return _plan.record(self, series, out)  # a streamed fast-path run computes it
        self.reset()
        return self.update(*series, out=out)

    def update(self, *series: Series, out: Any = None) -> Any:
        """Feed the next bars and return their outputs.

        Pass one array per input (all the same length) or one number per input for a single
        bar. Outputs are written into `out` when given (an array, or a tuple of arrays for
        several outputs; each as long as the inputs, views allowed) and returned; else into new
        arrays. A single bar given as numbers returns numbers.
        """
        if len(series) != len(self.inputs):
            raise TypeError(
                f"{type(self).__name__} takes {len(self.inputs)} series "
                f"({', '.join(self.inputs)}), got {len(series)}"
            )
        if out is None and isinstance(series[0], NUMBER_TYPES):
            return self._update_one(series)
        ins = tuple(as_input(s, i in self._numeric_inputs) for i, s in enumerate(series))
        m = ins[0].shape[0]
        for arr in ins[1:]:
            if arr.shape[0] != m:
                raise ValueError(f"input series differ in length: {m} and {arr.shape[0]}")
        outs = self._outs(m, out)
        self._call(ins, outs)
        return outs[0] if len(outs) == 1 else outs

    # -- helpers ---------------------------------------------------------------------------------

    def _update_one(self, values: tuple) -> Any:
        ins = self._one_in
        for k, value in enumerate(values):
            if not isinstance(value, NUMBER_TYPES):
                raise TypeError(f"a one-bar update takes numbers, got {value!r}")
            ins[k][0] = value
        outs = self._one_out
        self._call(ins, outs)
        if len(outs) == 1:
            return outs[0][0].item()
        return tuple(o[0].item() for o in outs)

    def _outs(self, m: int, out: Any) -> tuple[np.ndarray, ...]:
        k = len(self.outputs)
        if out is None:
            return tuple(empty(m, self.out_dtype) for _ in range(k))
        outs = (out,) if isinstance(out, np.ndarray) else tuple(out)
        if len(outs) != k:
            raise ValueError(f"{type(self).__name__} writes {k} outputs, got {len(outs)} arrays")
        for o in outs:
            if type(o) is not np.ndarray or o.ndim != 1 or o.shape[0] != m:
                raise ValueError(f"out must be 1-D arrays of length {m}")
            if not o.flags.writeable:
                raise ValueError("out arrays must be writeable")
            if o.dtype != self.out_dtype and o.dtype != np.float64:
                raise ValueError(f"out arrays must be {self.out_dtype}, got {o.dtype}")
        return outs

    def __repr__(self) -> str:
        params = ", ".join(repr(p) for p in self._params())
        return f"{type(self).__name__}({params}) after {self.bars} bars"
