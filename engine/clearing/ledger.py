"""The durable ledger: one append-only log of `LedgerEvent`s per account, group-committed.

An event is in the ledger, and may be told to anyone, only once `Ledger.append` has returned.
On open, a torn tail left by a crash is cut off; real corruption is reported and never "repaired".
This module holds no accounting: it stores and replays events in order and never reorders,
rewrites or drops a record that an `append` returned for.

File format (`<account dir>/ledger.log`, little-endian):

    header   8 bytes magic b"ENGLEDGR", uint32 format version (1)
    record   uint32 payload length, uint32 zlib.crc32(payload), payload
    payload  the event's JSON, byte-identical to TypeAdapter(LedgerEvent).dump_json(event)

Why a log and not SQLite in WAL mode: an append is one write() of the whole batch and one
fdatasync(), which is group commit by construction; a torn tail is detectable from the length
and CRC alone; replay is a sequential read; and the format is readable by a ten-line script.
Both were measured with benchmarks/ledger.py on this project's machine (ext4 on a virtual disk,
2 CPUs): 199-byte OrderFilled events, the same encoder, one fsync (SQLite: one transaction with
synchronous=FULL) per batch; k events/s, median (range) of 5 runs:

    batch    this log             SQLite WAL
        1      3.4 (1.5-3.5)        2.1 (1.2-3.3)     fsync-bound: ~0.3 ms per commit
      100      141 (84-153)         156 (81-172)      fsync-bound: a tie within the noise
     1000      503 (310-573)        335 (235-357)     encode-bound: SQLite adds ~1 us a row

Both meet the >= 50k fills/s target once batches reach ~100; the log is as fast or 1.5x faster,
needs no schema, and its recovery rules are the few lines in `_recover` rather than SQLite's.
Replay reads and decodes ~350k events/s. Encoding uses each model's own serializer, 2.5x
cheaper than the union TypeAdapter (0.7 vs 1.8 us for an OrderFilled) and byte-identical
(the tests check every event type).

Recovery on open: records are checked by length and CRC up to the first bad spot. If no valid
record follows it, the rest is a torn tail (a crash mid-append, or zero fill after a power
cut): it is truncated away with one logged warning. If a valid record does follow, the file is
corrupt: `LedgerCorrupt` is raised and the file is left untouched. A record whose CRC holds but
whose JSON does not decode was written whole, so it is never truncated; `events()` raises
`LedgerCorrupt` for it. A power cut that keeps later pages of an unsynced batch but not earlier
ones also reads as corruption: refused, nothing lost, a human decides. A batch is not atomic:
after a crash a prefix of the last batch may survive, a consistent (if unannounced) history.

Only one process may hold an account's ledger: `Ledger.open` takes flock(LOCK_EX) on
`ledger.log.lock` and writes its pid there. A Ledger is not thread-safe.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from pydantic import TypeAdapter, ValidationError

from engine.orders import (
    AccountOpened,
    LedgerEvent,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderRejected,
    OrderTriggered,
)

__all__ = ["Ledger", "LedgerError", "LedgerCorrupt", "LedgerLocked", "LOG_NAME", "read_events"]

log = logging.getLogger(__name__)

LOG_NAME = "ledger.log"
MAGIC = b"ENGLEDGR"
VERSION = 1
_HEADER = struct.Struct("<8sI")
_HEADER_BYTES = _HEADER.pack(MAGIC, VERSION)
_RECORD = struct.Struct("<II")
# No event comes near this (they are 100-300 bytes); a larger length field is damage, not data.
MAX_PAYLOAD = 16 << 20

_ADAPTER = TypeAdapter(LedgerEvent)
_SERIALIZERS = {
    cls: cls.__pydantic_serializer__
    for cls in (AccountOpened, OrderAccepted, OrderRejected, OrderTriggered, OrderFilled,
                OrderModified, OrderCancelled)
}

if hasattr(fcntl, "F_FULLFSYNC"):  # macOS: fsync() does not reach the platter, this does
    def _sync(fd: int) -> None:
        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
else:
    _sync = getattr(os, "fdatasync", os.fsync)


class LedgerError(RuntimeError):
    """A ledger could not be opened, read or written; the message names the file."""


class LedgerCorrupt(LedgerError):
    """The ledger holds a damaged record that is not a torn tail; the file was not modified."""

    def __init__(self, path: Path, record: int, offset: int, why: str) -> None:
        super().__init__(f"{path}: record {record} (counting from 0) at byte offset {offset} "
                         f"{why}; the file was left as it is")
        self.path, self.record, self.offset = path, record, offset


class LedgerLocked(LedgerError):
    """Another process holds the account's ledger open."""

    def __init__(self, account: Path, pid: int | None) -> None:
        who = f"process {pid}" if pid is not None else "another process (pid not yet written)"
        super().__init__(f"account {account}: its ledger is held open by {who}")
        self.account, self.pid = account, pid


class Ledger:
    """An open, locked, append-only ledger. Get one from `Ledger.open`."""

    def __init__(self, path: Path, fd: int, lock_fd: int, count: int, size: int) -> None:
        self._path = path
        self._fd = fd
        self._lock_fd = lock_fd
        self._count = count
        self._size = size  # bytes of whole records plus the header: where the next append lands
        self._failed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Ledger:
        """Open the ledger at `path`, recovering from a crash, and lock it for this process.

        `path` is an account directory (its ledger is `ledger.log` inside) or, when it names an
        existing file or ends in ".log", the log file itself. With `create`, a missing ledger
        (and its directories, mode 0700) is created; otherwise it is a LedgerError.
        Raise LedgerLocked if another process has it open, LedgerCorrupt if it is damaged.
        """
        p = Path(path)
        log_path = p / LOG_NAME if p.is_dir() or (not p.exists() and p.suffix != ".log") else p
        if not create and not log_path.exists():
            raise LedgerError(f"{log_path}: no ledger here (open it with create=True to start one)")
        if create:
            _make_dirs(log_path.parent)
        lock_fd = _lock(log_path)
        try:
            if not log_path.exists():
                _create(log_path)
            fd = os.open(log_path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            try:
                count, size = _recover(log_path, fd)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(log_path, fd, lock_fd, count, size)

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"{self._count} records"
        return f"<Ledger {self._path} {state}>"

    def append(self, events: Sequence[LedgerEvent]) -> int:
        """Append `events` in order with one write and one fsync; return the new record count.

        When this returns the events are durable. If it raises LedgerError, the batch may be
        partly written and the ledger refuses further appends: close and reopen it to recover.
        """
        self._check_writable()
        parts: list[bytes] = []
        for event in events:
            serializer = _SERIALIZERS.get(type(event))
            if serializer is None:
                raise TypeError(f"{self._path}: cannot append {type(event).__name__}, "
                                "not a LedgerEvent")
            payload = serializer.to_json(event)
            if len(payload) > MAX_PAYLOAD:
                raise LedgerError(f"{self._path}: a {type(event).__name__} encodes to "
                                  f"{len(payload)} bytes, over the {MAX_PAYLOAD}-byte limit")
            parts.append(_RECORD.pack(len(payload), zlib.crc32(payload)))
            parts.append(payload)
        if not parts:
            return self._count
        data = b"".join(parts)
        try:
            with memoryview(data) as rest:
                while rest:
                    rest = rest[os.write(self._fd, rest):]
            _sync(self._fd)
        except OSError as exc:
            self._failed = True
            try:  # leave no half batch behind if we can; recovery copes if we cannot
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise LedgerError(f"{self._path}: appending {len(parts) // 2} events failed ({exc}); "
                              "reopen the ledger before appending again") from exc
        self._size += len(data)
        self._count += len(parts) // 2
        return self._count

    def events(self) -> Iterator[LedgerEvent]:
        """Iterate over the records that exist now, oldest first, decoded.

        Raise LedgerCorrupt if a record fails its CRC or does not decode as a LedgerEvent.
        """
        self._check_open()
        # Mapped now, so the iterator sees exactly these records even if more are appended.
        return self._replay(mmap.mmap(self._fd, self._size, access=mmap.ACCESS_READ))

    def _replay(self, mm: mmap.mmap) -> Iterator[LedgerEvent]:
        validate = _ADAPTER.validate_json
        end = len(mm)
        with mm:
            offset, index = _HEADER.size, 0
            while offset < end:
                length, crc = _RECORD.unpack_from(mm, offset)
                payload = mm[offset + _RECORD.size:offset + _RECORD.size + length]
                if zlib.crc32(payload) != crc:
                    raise LedgerCorrupt(self._path, index, offset, "changed since it was written "
                                        "(CRC mismatch)")
                try:
                    event = validate(payload)
                except ValidationError as exc:
                    raise LedgerCorrupt(self._path, index, offset, "does not decode as a "
                                        f"LedgerEvent ({exc.errors()[0]['msg']})") from exc
                yield event
                offset += _RECORD.size + length
                index += 1

    def close(self) -> None:
        """Close the log and release the lock (appends are already durable). Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            os.close(self._lock_fd)  # closing the only descriptor releases the flock
            self._fd = self._lock_fd = -1

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._fd < 0:
            raise LedgerError(f"{self._path}: the ledger is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failed:
            raise LedgerError(f"{self._path}: an earlier append failed; reopen the ledger")


def _make_dirs(directory: Path) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        _fsync_dir(d.parent)  # the new entry survives a power cut


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(log_path: Path) -> int:
    lock_path = log_path.with_name(log_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        raise LedgerLocked(log_path.parent, int(text) if text.isdigit() else None) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _create(log_path: Path) -> None:
    # Header first in a side file, then rename: a crash never leaves a headerless ledger.
    tmp = log_path.with_name(log_path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, _HEADER_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, log_path)
    _fsync_dir(log_path.parent)


def _recover(path: Path, fd: int) -> tuple[int, int]:
    """Check the log, cut off a torn tail; return (record count, size in bytes)."""
    size = os.fstat(fd).st_size
    if size < _HEADER.size:
        head = os.pread(fd, size, 0)
        if not _HEADER_BYTES.startswith(head):
            raise LedgerCorrupt(path, 0, 0, f"is missing: {size} bytes that are not a ledger header")
        log.warning("%s: rewrote a torn file header (%d of %d bytes present)", path, size,
                    _HEADER.size)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _HEADER_BYTES, 0)
        _sync(fd)
        return 0, _HEADER.size
    magic, version = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
    if magic != MAGIC:
        raise LedgerError(f"{path}: not an engine ledger (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise LedgerError(f"{path}: ledger format version {version}; this engine reads {VERSION}")
    if size == _HEADER.size:
        return 0, size
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm, memoryview(mm) as view:
        offset, count = _HEADER.size, 0
        while (why := _bad_record(view, offset, size)) is None:
            offset += _RECORD.size + _RECORD.unpack_from(view, offset)[0]
            count += 1
            if offset == size:
                return count, size
        following = _next_valid_record(mm, view, offset, size)
    if following is not None:
        raise LedgerCorrupt(path, count, offset, f"is damaged ({why}) and a valid record follows "
                            f"at byte offset {following}")
    log.warning("%s: dropped a torn tail of %d bytes at byte offset %d (%s); %d records kept",
                path, size - offset, offset, why, count)
    os.ftruncate(fd, offset)
    _sync(fd)
    return count, offset


def _bad_record(view: memoryview, offset: int, size: int) -> str | None:
    """Why the record at `offset` is not whole and valid, or None if it is."""
    if size - offset < _RECORD.size:
        return "incomplete record header"
    length, crc = _RECORD.unpack_from(view, offset)
    if length == 0 or length > MAX_PAYLOAD:
        return f"impossible payload length {length}"
    start = offset + _RECORD.size
    if start + length > size:
        return f"payload of {length} bytes cut short at {size - start}"
    if zlib.crc32(view[start:start + length]) != crc:
        return "CRC mismatch"
    return None


def _next_valid_record(mm: mmap.mmap, view: memoryview, offset: int, size: int) -> int | None:
    # Every payload is a JSON object, so a record can only start 8 bytes before a '{'.
    brace = mm.find(b"{", offset + _RECORD.size + 1)
    while brace >= 0:
        if _bad_record(view, brace - _RECORD.size, size) is None:
            return brace - _RECORD.size
        brace = mm.find(b"{", brace + 1)
    return None


def read_events(path: str | os.PathLike[str]) -> Iterator[tuple[Path, LedgerEvent]]:
    """Read an account's ledger without locking or changing it (for reports while it runs).

    Yields (log path, event) for every whole record; a record still being written at the end
    (a live writer mid-append, or a torn tail the next open will cut) ends the read quietly.
    Raise LedgerError if there is no ledger, LedgerCorrupt for damage before the end.
    """
    p = Path(path)
    log_path = p / LOG_NAME if p.is_dir() or p.suffix != ".log" else p
    try:
        data = log_path.read_bytes()
    except FileNotFoundError:
        raise LedgerError(f"{log_path}: no ledger here") from None
    if len(data) < _HEADER.size or data[:_HEADER.size] != _HEADER_BYTES:
        if len(data) < _HEADER.size and _HEADER_BYTES.startswith(data):
            return
        raise LedgerCorrupt(log_path, 0, 0, "is not an engine ledger (bad header)")
    offset, index, end = _HEADER.size, 0, len(data)
    validate = _ADAPTER.validate_json
    while offset + _RECORD.size <= end:
        length, crc = _RECORD.unpack_from(data, offset)
        stop = offset + _RECORD.size + length
        payload = data[offset + _RECORD.size:stop]
        if stop > end or zlib.crc32(payload) != crc:
            if _next_valid_record(data, memoryview(data), offset, end) is None:
                return  # the tail a writer is still appending, or a torn one
            raise LedgerCorrupt(log_path, index, offset, "changed since it was written "
                                "(CRC mismatch)")
        try:
            yield log_path, validate(payload)
        except ValidationError as exc:
            raise LedgerCorrupt(log_path, index, offset, "does not decode as a LedgerEvent "
                                f"({exc.errors()[0]['msg']})") from exc
        offset = stop
        index += 1
