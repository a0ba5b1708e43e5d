"""Structured numpy arrays in POSIX shared memory, written by one process and read in place by any.

A segment holds a small header (the first and last filled row) followed by `size` rows of a
structured dtype. The writer appends with `push` and inserts history with `prepend`; readers
attach by token and slice the filled rows without copying. Rows are written before the bound that
exposes them moves, so a reader never sees a half-written row (x86-64 and aarch64 keep a single
aligned 8-byte store atomic, and the writer orders data before index).

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

from engine.dtypes import ohlc_dtype, tick_dtype

__all__ = ["ShmArray", "ShmToken", "ShmError", "ohlc_dtype", "tick_dtype"]

# Header: first, last (row indices, last exclusive) and the row capacity, as int64; padded to
# 64 bytes so rows start cache-line aligned.
_HEADER = 64
_PREFIX = "engine_"


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
    ) -> ShmArray:
        """Create a segment for `size` rows of `dtype`; this process owns and later unlinks it.

        `start` is the row where the first push lands (default: the middle, leaving room to
        prepend history); use 0 for a buffer that only grows forward, such as a tick log.
        """
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
        shm._header[0] = start
        shm._header[1] = start
        shm._header[2] = size
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
    def first(self) -> int:
        return int(self._header[0])

    @property
    def last(self) -> int:
        """One past the last filled row."""
        return int(self._header[1])

    def __len__(self) -> int:
        return self.last - self.first

    @property
    def array(self) -> np.ndarray:
        """The filled rows, first..last, as a view into shared memory (no copy)."""
        if self._closed:
            raise ShmError(f"segment {self._name!r} is closed")
        # Read the bounds once each so a concurrent push cannot give a torn slice.
        first = int(self._header[0])
        last = int(self._header[1])
        return self._buf[first:last]

    @property
    def buffer(self) -> np.ndarray:
        """The whole segment's rows, filled or not (for kernels that write in place)."""
        return self._buf

    def last_rows(self, n: int = 1) -> np.ndarray:
        """The newest `n` filled rows (a view)."""
        last = int(self._header[1])
        return self._buf[max(int(self._header[0]), last - n) : last]

    @property
    def room_after(self) -> int:
        """Rows that can still be pushed."""
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

    def push(self, rows: np.ndarray) -> int:
        """Append rows after the last one; return the new `last` (one past the last row)."""
        self._check_writable()
        rows = self._as_rows(rows)
        n = len(rows)
        last = int(self._header[1])
        end = last + n
        if end > self._size:
            raise ShmError(
                f"push of {n} rows overruns segment {self._name!r}: "
                f"{self._size - last} rows of room after row {last}"
            )
        self._buf[last:end] = rows
        if self._has_index:
            self._buf["index"][last:end] = np.arange(last, end)
        self._header[1] = end
        return end

    def prepend(self, rows: np.ndarray) -> int:
        """Insert rows before the first one; return the new `first`."""
        self._check_writable()
        rows = self._as_rows(rows)
        n = len(rows)
        first = int(self._header[0])
        start = first - n
        if start < 0:
            raise ShmError(
                f"prepend of {n} rows overruns segment {self._name!r}: "
                f"{first} rows of room before row {first}"
            )
        self._buf[start:first] = rows
        if self._has_index:
            self._buf["index"][start:first] = np.arange(start, first)
        self._header[0] = start
        return start

    def reset(self, rows: np.ndarray | None = None, start: int = 0) -> int:
        """Drop every row and start again at `start` with `rows` (a rolling buffer's wrap).

        A reader slicing `array` meanwhile sees either the old rows, nothing, or the new rows;
        a view taken before the reset may see new data under old positions.
        """
        self._check_writable()
        rows = self._as_rows(rows if rows is not None else np.empty(0, self._dtype))
        end = start + len(rows)
        if start < 0 or end > self._size:
            raise ShmError(f"reset of {len(rows)} rows at {start} overruns segment {self._name!r}")
        self._header[0] = self._header[1]
        self._buf[start:end] = rows
        if self._has_index:
            self._buf["index"][start:end] = np.arange(start, end)
        self._header[1] = end
        self._header[0] = start
        return end

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Drop this process's mapping; views taken from `array` must no longer be used."""
        if self._closed:
            return
        self._closed = True
        self._header = None  # type: ignore[assignment]
        self._buf = None  # type: ignore[assignment]
        try:
            self._mmap.close()
        except BufferError:
            # A caller still holds a view; the mapping goes when the last view does.
            pass

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
