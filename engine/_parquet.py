"""Files of the history store: names made safe, atomic Parquet writes, locks, and reads whose
errors name the file.

Shared by bars (engine.store) and recorded ticks (engine.tick_recorder). A write goes to a dot-file
temporary in the target's directory, is fsynced, renamed over the target and the directory is
fsynced: a reader sees the old file or the new one, never a part, whatever interrupts the writer.
This module knows nothing of what the tables hold.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from engine.sampler import format_timeframe

__all__ = ["StoreError", "StoreInfo", "META_KEY", "provider_name", "encode_name", "locked",
           "write_atomic", "read_table", "read_meta", "check_columns"]

META_KEY = b"engine"  # the key of the JSON metadata every stored file carries

_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


class StoreError(RuntimeError):
    """The store cannot read or write a dataset; the message names the file or the dataset."""


@dataclass(frozen=True)
class StoreInfo:
    """One stored dataset: bars of `timeframe` seconds, or ticks (`timeframe` 0).

    `first` and `last` are epoch seconds of the first and last bar (open time) or tick; `added`
    is how many rows the call that returned this info stored that were not there before.
    """

    provider: str
    symbol: str
    timeframe: int
    first: int
    last: int
    rows: int
    path: Path
    added: int = 0

    @property
    def kind(self) -> str:
        return "ticks" if self.timeframe == 0 else "bars"

    @property
    def timeframe_text(self) -> str:
        return "ticks" if self.timeframe == 0 else format_timeframe(self.timeframe)

    def as_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "symbol": self.symbol, "kind": self.kind,
                "timeframe": self.timeframe_text, "seconds": self.timeframe,
                "first": self.first, "last": self.last, "rows": self.rows,
                "path": str(self.path)}



# -- names ---------------------------------------------------------------------------------------


def provider_name(spec: str) -> str:
    """Return the store's name for a provider spec: `providers.sim` and `sim` are both `sim`,
    a provider file `path/to/feed.py` (or package directory) is `feed`."""
    spec = str(spec).strip()
    if spec.endswith(".py") or "/" in spec or os.sep in spec:
        path = Path(spec)
        return path.stem if path.suffix == ".py" else path.name
    return spec.removeprefix("providers.")


def encode_name(name: str, what: str) -> str:
    """Return `name` as a file name: itself when it is plain, else percent-encoded."""
    if not name or len(name) > 200:
        raise StoreError(f"bad {what} name {name!r}: must be 1 to 200 characters")
    if _SAFE.fullmatch(name) and not name.startswith("."):
        return name
    encoded = quote(name, safe="")
    # Never '.', '..' or a hidden name: dot-files in the store are temporaries and locks.
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


# -- Parquet files ------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (created if missing) for a read-merge-write."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _dump(table: pa.Table, f: Any) -> None:
    pq.write_table(table, f, compression="zstd")


def _remove_stale_temps(directory: Path) -> None:
    # Temporaries of processes that died mid-write (kill -9): never another live writer's.
    for tmp in directory.glob(".*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def write_atomic(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _remove_stale_temps(path.parent)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:
            _dump(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the directory entry is on disk.
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unreadable(path: Path, exc: BaseException) -> StoreError:
    return StoreError(f"{path}: cannot be read as Parquet ({exc}); move the file away or delete "
                      "it to rebuild the dataset")


def read_table(path: Path, columns: list[str], filters: list | None = None) -> pa.Table:
    """Read `columns` of a stored Parquet file; raise StoreError naming the file if it is bad."""
    try:
        table = pq.read_table(path, columns=columns, filters=filters)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    return table


def check_columns(path: Path, fields: tuple[str, ...], what: str) -> None:
    """Raise StoreError naming the file unless its schema holds `fields`."""
    try:
        names = set(pq.read_schema(path).names)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    missing = [f for f in fields if f not in names]
    if missing:
        raise StoreError(f"{path}: is not {what} (no column {', '.join(missing)})")


def read_meta(path: Path) -> tuple[dict, int]:
    """Return a stored file's engine metadata and row count (footer only, no data read)."""
    try:
        meta = pq.read_metadata(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, exc) from None
    raw = (meta.metadata or {}).get(META_KEY)
    try:
        info = json.loads(raw) if raw else {}
    except ValueError:
        info = {}
    return info, meta.num_rows
