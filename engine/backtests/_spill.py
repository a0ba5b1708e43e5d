"""Fills spilled to Parquet: the directory a fill log (`records.FillLog`) moves its oldest rows
to once it holds more than its bound, the part files in it, and the removal of directories
whose process died. Knows rows of a structured array and their client ids, not their fields.

A directory is `engine_fills_<pid>_<random>` under `tempfile.gettempdir()` (`TMPDIR` chooses
it), one per log, made at its first spill and removed with its parts when the log is garbage
collected or the process exits (`weakref.finalize`; never by a forked child). A process killed
with -9 leaves its directory behind: making a spill directory first removes those of this user
whose process is dead (`engine._pids`), so the next run that spills cleans up.

Parts are written plain (no compression, no fsync, no temporary and rename): they live only as
long as the process that wrote them, which reads a part only after writing it whole, and plain
pages are read back memory-mapped.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from engine._pids import boot_time, maker_gone

__all__ = ["SpillError", "PREFIX", "spill_root", "make_dir", "reap", "write_part", "read_part"]

log = logging.getLogger("engine.backtests")

PREFIX = "engine_fills_"
_IDS = "client_id"


class SpillError(RuntimeError):
    """Fills could not be spilled or read back; the message names the file."""


def spill_root() -> Path:
    """The directory spill directories are made in."""
    return Path(tempfile.gettempdir())


def _remove(path: str, pid: int) -> None:
    # A forked child inherits the log and its finalizer: only the maker removes the files.
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def make_dir(owner: object) -> Path:
    """A new spill directory, removed when `owner` is garbage collected or the process exits;
    the directories of dead processes are removed first."""
    root = spill_root()
    reap(root)
    try:
        path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}_", dir=root)
    except OSError as exc:
        raise SpillError(f"cannot make a directory for spilled fills in {root}: {exc} "
                         "(TMPDIR chooses where)") from None
    weakref.finalize(owner, _remove, path, os.getpid())
    return Path(path)


def _maker(name: str) -> int | None:
    try:
        return int(name[len(PREFIX):].split("_", 1)[0])
    except ValueError:
        return None


def reap(root: Path | None = None) -> list[str]:
    """Remove this user's spill directories in `root` (default `spill_root()`) whose process
    is dead; return their names."""
    root = spill_root() if root is None else root
    try:
        names = [n for n in os.listdir(root) if n.startswith(PREFIX)]
        boot = boot_time()
    except OSError:
        return []  # no such directory or no /proc: nothing we can judge safely
    uid, me = os.getuid(), os.getpid()
    removed = []
    for name in names:
        pid = _maker(name)
        if pid is None or pid == me:
            continue
        path = root / name
        try:
            st = path.lstat()
        except OSError:
            continue  # removed meanwhile
        # A part written later moves the mtime on: the maker then only looks alive for longer.
        if st.st_uid != uid or not path.is_dir() or path.is_symlink():
            continue
        if not maker_gone(pid, st.st_mtime, boot):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(name)
    if removed:
        log.info("removed %d spilled-fill director%s of dead engine processes: %s",
                 len(removed), "y" if len(removed) == 1 else "ies", ", ".join(sorted(removed)))
    return removed


def write_part(path: Path, rows: np.ndarray, ids: list[str]) -> None:
    """Write `rows` (a structured array) and their client ids to the Parquet file `path`."""
    import pyarrow as pa  # here: a run that never spills never loads Parquet
    import pyarrow.parquet as pq

    columns = {name: rows[name] for name in rows.dtype.names}
    columns[_IDS] = pa.array(ids, type=pa.string())
    try:
        pq.write_table(pa.table(columns), path, compression="none", use_dictionary=False,
                       write_statistics=False)
    except (pa.ArrowException, OSError) as exc:
        Path(path).unlink(missing_ok=True)
        raise SpillError(f"{path}: cannot spill fills there ({exc}); TMPDIR chooses the "
                         "directory, fills_in_memory=None keeps every fill in memory") from None


def read_part(path: Path, dtype: np.dtype, n: int, out: np.ndarray | None = None,
              ids: bool = True) -> tuple[np.ndarray, list[str]]:
    """The `n` rows (of `dtype`, into `out` if given) and client ids (none unless `ids`)
    spilled to `path`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = [*dtype.names, _IDS] if ids else list(dtype.names)
    try:
        with pq.ParquetFile(path, memory_map=True) as f:
            missing = [c for c in wanted if c not in f.schema_arrow.names]
            if missing:
                raise SpillError(f"{path}: not spilled fills (no column {', '.join(missing)})")
            if f.metadata.num_rows != n:
                raise SpillError(f"{path}: spilled fills hold {f.metadata.num_rows} rows, {n} "
                                 "were written")
            table = f.read(columns=wanted)
    except FileNotFoundError:
        raise SpillError(f"{path}: spilled fills are missing (removed while the results "
                         "holding them were alive)") from None
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    rows = np.empty(n, dtype=dtype) if out is None else out
    try:
        for name in dtype.names:
            column = table.column(name)
            if column.null_count:
                raise ValueError(f"column {name} has missing values")
            rows[name] = column.to_numpy()
        client_ids = table.column(_IDS).to_pylist() if ids else []
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise _unreadable(path, exc) from None
    if None in client_ids:
        raise _unreadable(path, ValueError("a client id is missing"))
    return rows, client_ids


def _unreadable(path: Path, exc: BaseException) -> SpillError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # one line
    return SpillError(f"{path}: spilled fills cannot be read back ({reason})")
