"""Structured numpy arrays in POSIX shared memory, written by one process and read in place by any.

A segment holds a small header (the first and last filled row, the base and the epoch) followed
by `size` rows of a structured dtype. The writer appends with `push` and inserts history with
`prepend`; readers attach by token and slice the filled rows without copying. Rows are written
before the bound that exposes them moves, so a reader never sees a half-written row (x86-64 and
aarch64 keep a single aligned 8-byte store atomic, and the writer orders data before index).

A rolling segment (`create(..., rolling=True)`) never fills up: a push that does not fit first
moves the newest rows to the front (keeping half the capacity, so a roll costs O(1) a row over
time) and drops the older ones. Every row has an absolute index that never changes (its `index`
field, and `base` + its position in the buffer), so a reader that holds indices across a roll
keeps finding its rows with `rows(start, stop)` until they are dropped. The epoch in the header
is odd while a roll moves rows and grows by two with each one: readers retry a read that saw it
change. A view taken before a roll may show other rows after it: take a fresh one.

This module never unlinks a segment it did not create: attaching goes around
`multiprocessing.shared_memory` on purpose, because in Python 3.11 that class registers every
attached segment with the resource tracker, which then unlinks it when the reader exits.
"""

from __future__ import annotations

import _posixshmem
import atexit
import mmap
import os
import secrets
import threading
import weakref
from multiprocessing import resource_tracker
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from engine import _shm_reap
from engine.dtypes import ohlc_dtype, tick_dtype

__all__ = ["ShmArray", "ShmToken", "ShmError", "ohlc_dtype", "tick_dtype"]

# Header, as int64: first, last (buffer positions, last exclusive), the row capacity, the base
# (absolute index of buffer row 0), the epoch (odd while rows move) and flags; padded to 64 bytes
# so rows start cache-line aligned.
_HEADER = 64
_FIRST, _LAST, _SIZE, _BASE, _EPOCH, _FLAGS = range(6)
_ROLLING = 1
_PREFIX = "engine_"
# Yields a reader waits for a roll to end before it gives up: a roll of a million rows takes
# milliseconds, so only a writer killed in the middle of one makes a reader wait this long.
_SPINS = 200_000


class ShmError(RuntimeError):
    """A shared-memory segment could not be created, attached or written."""


class ShmToken(BaseModel):
    """What another process needs to attach: the segment name, the row dtype and the capacity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dtype_descr: list[tuple[str, str]]
    size: int

    @property
    def dtype(self) -> np.dtype:
        return np.dtype([(str(n), str(t)) for n, t in self.dtype_descr])

    @classmethod
    def from_any(cls, token: ShmToken | dict[str, Any]) -> ShmToken:
        """Build a token from a token or its dict form (as sent between actors)."""
        if isinstance(token, ShmToken):
            return token
        return cls.model_validate(token)


def _descr(dtype: np.dtype) -> list[tuple[str, str]]:
    if dtype.names is None:
        raise ShmError(f"ShmArray needs a structured dtype, got {dtype}")
    return [(name, dtype.fields[name][0].str) for name in dtype.names]


# Segments this process created and has not unlinked yet; unlinked at interpreter exit.
_owned: weakref.WeakValueDictionary[str, ShmArray] = weakref.WeakValueDictionary()
_owned_lock = threading.Lock()


@atexit.register
def _unlink_owned() -> None:
    with _owned_lock:
        arrays = list(_owned.values())
    for shm in arrays:
        shm.close()
        shm.unlink()


class ShmArray:
    """Rows of a structured dtype in a named shared-memory segment.

    `first` is the index of the first filled row and `last` one past the last filled row, so
    `array` is `buffer[first:last]`, a view with no copy.
    """

    def __init__(
        self,
        name: str,
        dtype: np.dtype,
        size: int,
        mm: mmap.mmap,
        *,
        owner: bool,
        readonly: bool,
    ) -> None:
        self._name = name
        self._dtype = dtype
        self._size = size
        self._mmap = mm
        self._owner = owner
        self._readonly = readonly
        self._closed = False
        self._unlinked = False
        self._header = np.ndarray((8,), dtype=np.int64, buffer=mm, offset=0)
        # The same header as Python ints: reads of the bounds on every bar take a third of the
        # time through a memoryview than through numpy scalars.
        self._hv: memoryview | None = memoryview(mm)[:_HEADER].cast("q")
        self._buf = np.ndarray((size,), dtype=dtype, buffer=mm, offset=_HEADER)
        if readonly:
            self._buf.flags.writeable = False
        self._has_index = dtype.names is not None and "index" in dtype.names

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        dtype: np.dtype | list,
        size: int,
        name: str | None = None,
        *,
        start: int | None = None,
        rolling: bool = False,
    ) -> ShmArray:
        """Create a segment for `size` rows of `dtype`; this process owns and later unlinks it.

        `start` is the row where the first push lands (default: the middle, leaving room to
        prepend history); use 0 for a buffer that only grows forward, such as a tick log.
        `rolling` makes a push that does not fit drop the oldest rows instead of failing.
        The first segment a process creates also removes those dead engines left behind
        (`engine._shm_reap`).
        """
        _shm_reap.reap_once()
        dtype = np.dtype(dtype)
        _descr(dtype)
        if size <= 0:
            raise ShmError(f"ShmArray size must be positive, got {size}")
        start = size // 2 if start is None else start
        if not 0 <= start <= size:
            raise ShmError(f"start {start} is outside the buffer of {size} rows")
        name = name or f"{_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
        nbytes = _HEADER + size * dtype.itemsize
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        except FileExistsError:
            raise ShmError(f"shared-memory segment {name!r} already exists") from None
        try:
            os.ftruncate(fd, nbytes)
            mm = mmap.mmap(fd, nbytes)
        except BaseException:
            _posixshmem.shm_unlink("/" + name)
            raise
        finally:
            os.close(fd)
        # The resource tracker unlinks the segment if this process dies without doing so (kill -9).
        resource_tracker.register("/" + name, "shared_memory")
        shm = cls(name, dtype, size, mm, owner=True, readonly=False)
        shm._header[_FIRST] = start
        shm._header[_LAST] = start
        shm._header[_SIZE] = size
        shm._header[_FLAGS] = _ROLLING if rolling else 0
        with _owned_lock:
            _owned[name] = shm
        return shm

    @classmethod
    def attach(cls, token: ShmToken | dict[str, Any], *, readonly: bool = True) -> ShmArray:
        """Attach to a segment another process created; never unlinks it."""
        token = ShmToken.from_any(token)
        dtype = token.dtype
        try:
            fd = _posixshmem.shm_open("/" + token.name, os.O_RDWR, mode=0o600)
        except FileNotFoundError:
            raise ShmError(f"no shared-memory segment named {token.name!r}") from None
        try:
            nbytes = os.fstat(fd).st_size
            expected = _HEADER + token.size * dtype.itemsize
            if nbytes != expected:
                raise ShmError(
                    f"segment {token.name!r} holds {nbytes} bytes, the token implies {expected}"
                )
            mm = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
        return cls(token.name, dtype, token.size, mm, owner=False, readonly=readonly)

    # -- reading -------------------------------------------------------------------------------

    @property
    def token(self) -> ShmToken:
        return ShmToken(name=self._name, dtype_descr=_descr(self._dtype), size=self._size)

    @property
    def name(self) -> str:
        return self._name

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def size(self) -> int:
        """Capacity in rows."""
        return self._size

    @property
    def rolling(self) -> bool:
        """True when a push that does not fit drops the oldest rows instead of failing."""
        return bool(self._header[_FLAGS] & _ROLLING)

    @property
    def first(self) -> int:
        """Buffer position of the first filled row."""
        return int(self._header[_FIRST])

    @property
    def last(self) -> int:
        """Buffer position one past the last filled row."""
        return int(self._header[_LAST])

    @property
    def base(self) -> int:
        """Absolute index of buffer row 0: it grows when a roll drops rows."""
        return int(self._header[_BASE])

    @property
    def epoch(self) -> int:
        """Count of moves of the rows (rolls, resets), times two; odd while one is under way."""
        return int(self._header[_EPOCH])

    def bounds(self) -> tuple[int, int, int]:
        """(first, last, base): the filled rows' buffer positions and the absolute index of
        buffer row 0, read together (retried while a roll moves rows)."""
        h = self._hv
        if h is None:
            raise ShmError(f"segment {self._name!r} is closed")
        for _ in range(_SPINS):
            epoch = h[_EPOCH]
            first, last, base = h[_FIRST], h[_LAST], h[_BASE]
            if not epoch & 1 and h[_EPOCH] == epoch:
                return first, last, base
            os.sched_yield()
        raise ShmError(f"segment {self._name!r} stayed mid-roll: its writer stopped while "
                       "moving rows")

    def span(self) -> tuple[int, int]:
        """Absolute indices of the first filled row and one past the last, read together."""
        first, last, base = self.bounds()
        return base + first, base + last

    @property
    def first_index(self) -> int:
        """Absolute index of the oldest row still held."""
        return self.span()[0]

    @property
    def last_index(self) -> int:
        """Absolute index one past the newest row: it grows by one for every row pushed."""
        return self.span()[1]

    def __len__(self) -> int:
        first, last, _ = self.bounds()
        return last - first

    @property
    def array(self) -> np.ndarray:
        """The filled rows, first..last, as a view into shared memory (no copy)."""
        first, last, _ = self.bounds()
        return self._buf[first:last]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """The rows of absolute indices start..stop (stop exclusive), a view (no copy).

        Raise ShmError when some of them have rolled out or are not written yet.
        """
        first, last, base = self.bounds()
        if start < base + first or stop > base + last or start > stop:
            raise ShmError(f"rows {start}..{stop} of segment {self._name!r} are not held: it "
                           f"holds {base + first}..{base + last}")
        return self._buf[start - base:stop - base]

    def window(self, stop: int) -> np.ndarray:
        """The held rows before absolute index `stop`, oldest first (a view; empty when every
        row before it rolled out)."""
        first, last, base = self.bounds()
        return self._buf[first:max(first, min(stop - base, last))]

    @property
    def buffer(self) -> np.ndarray:
        """The whole segment's rows, filled or not (for kernels that write in place)."""
        return self._buf

    def last_rows(self, n: int = 1) -> np.ndarray:
        """The newest `n` filled rows (a view)."""
        first, last, _ = self.bounds()
        return self._buf[max(first, last - n) : last]

    @property
    def room_after(self) -> int:
        """Rows that can still be pushed (before a rolling segment rolls)."""
        return self._size - self.last

    @property
    def room_before(self) -> int:
        """Rows that can still be prepended."""
        return self.first

    # -- writing -------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise ShmError(f"segment {self._name!r} is closed")
        if self._readonly:
            raise ShmError(f"segment {self._name!r} is attached read-only")

    def _as_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.ndim == 0:
            rows = rows.reshape(1)
        if rows.dtype != self._dtype:
            if rows.dtype.names is None or set(rows.dtype.names) - set(self._dtype.names):
                raise ShmError(f"rows of dtype {rows.dtype} do not fit segment dtype {self._dtype}")
            # Same field names in another layout: copy field by field into our layout.
            out = np.zeros(len(rows), dtype=self._dtype)
            for field in rows.dtype.names:
                out[field] = rows[field]
            rows = out
        return rows

    def _write(self, pos: int, rows: np.ndarray, base: int) -> None:
        end = pos + len(rows)
        self._buf[pos:end] = rows
        if self._has_index:
            self._buf["index"][pos:end] = np.arange(base + pos, base + end)

    def push(self, rows: np.ndarray) -> int:
        """Append rows after the last one; return the new `last` (a buffer position).

        A rolling segment that lacks room first drops its oldest rows, keeping the newest half
        of its capacity (or, for a push of more than that, only the newest `size` pushed rows).
        """
        self._check_writable()
        rows = self._as_rows(rows)
        n = len(rows)
        h = self._header
        last = int(h[_LAST])
        end = last + n
        if end <= self._size:
            self._write(last, rows, int(h[_BASE]))
            h[_LAST] = end
            return end
        if not h[_FLAGS] & _ROLLING:
            raise ShmError(
                f"push of {n} rows overruns segment {self._name!r}: "
                f"{self._size - last} rows of room after row {last}"
            )
        first, base = int(h[_FIRST]), int(h[_BASE])
        keep = min(last - first, max(0, self._size // 2 - n))
        kept = rows[max(0, n - self._size):]
        # Position 0 holds the oldest row kept: an old one, or the first pushed row kept.
        new_base = base + last + (n - len(kept)) - keep
        self._begin_move()
        self._buf[:keep] = self._buf[last - keep:last]
        self._write(keep, kept, new_base)
        self._end_move(0, keep + len(kept), new_base)
        return keep + len(kept)

    def prepend(self, rows: np.ndarray) -> int:
        """Insert rows before the first one; return the new `first`."""
        self._check_writable()
        rows = self._as_rows(rows)
        n = len(rows)
        first = int(self._header[_FIRST])
        start = first - n
        if start < 0:
            raise ShmError(
                f"prepend of {n} rows overruns segment {self._name!r}: "
                f"{first} rows of room before row {first}"
            )
        self._write(start, rows, int(self._header[_BASE]))
        self._header[_FIRST] = start
        return start

    def _begin_move(self) -> None:
        # Odd epoch: readers retry; an empty range for readers of the bounds alone.
        h = self._header
        h[_EPOCH] += 1
        h[_FIRST] = h[_LAST]

    def _end_move(self, first: int, last: int, base: int) -> None:
        h = self._header
        h[_BASE] = base
        h[_LAST] = last
        h[_FIRST] = first
        h[_EPOCH] += 1

    def rebase(self, base: int, keep_from: int) -> None:
        """Move the rows from absolute index `keep_from` on so that buffer row 0 is absolute
        index `base`, dropping older rows: a writer mirroring another segment's roll (signals
        aligned row for row with their bars) calls this after that segment rolled."""
        self._check_writable()
        first, last, old = self.bounds()
        lo = max(keep_from, old + first)
        hi = old + last
        if lo >= hi:
            lo = hi = keep_from  # nothing kept: an empty segment that continues at keep_from
        if lo - base < 0 or hi - base > self._size:
            raise ShmError(f"rebase of segment {self._name!r} to base {base} cannot hold rows "
                           f"{lo}..{hi}")
        self._begin_move()
        self._buf[lo - base:hi - base] = self._buf[lo - old:hi - old]
        self._end_move(lo - base, hi - base, base)

    def reset(self, rows: np.ndarray | None = None, start: int = 0, *,
              base: int | None = None) -> int:
        """Drop every row and start again at `start` with `rows`; `base` (default: unchanged)
        sets the absolute index of buffer row 0. Readers see the epoch move, as after a roll.
        """
        self._check_writable()
        rows = self._as_rows(rows if rows is not None else np.empty(0, self._dtype))
        end = start + len(rows)
        if start < 0 or end > self._size:
            raise ShmError(f"reset of {len(rows)} rows at {start} overruns segment {self._name!r}")
        base = int(self._header[_BASE]) if base is None else int(base)
        self._begin_move()
        self._write(start, rows, base)
        self._end_move(start, end, base)
        return end

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Drop this process's mapping (once no view taken from it is left)."""
        if self._closed:
            return
        self._closed = True
        # Drop our references and never unmap here: numpy views hold the mmap object itself
        # (not a buffer export), so closing it under a view left alive would make reading that
        # view a segfault. The mapping goes when the last view does.
        self._header = None  # type: ignore[assignment]
        self._hv = None
        self._buf = None  # type: ignore[assignment]
        self._mmap = None  # type: ignore[assignment]

    def unlink(self) -> None:
        """Remove the segment's name (owner only); attached readers keep their mapping."""
        if not self._owner or self._unlinked:
            return
        self._unlinked = True
        with _owned_lock:
            _owned.pop(self._name, None)
        try:
            _posixshmem.shm_unlink("/" + self._name)
        except FileNotFoundError:
            pass
        resource_tracker.unregister("/" + self._name, "shared_memory")

    def __enter__(self) -> ShmArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self.unlink()

    def __del__(self) -> None:
        # An owner dropped without close(): still remove the name, never leave it in /dev/shm.
        if getattr(self, "_owner", False) and not getattr(self, "_unlinked", True):
            self.unlink()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"rows {self.first}..{self.last}"
        return f"ShmArray({self._name!r}, {state} of {self._size}, owner={self._owner})"
