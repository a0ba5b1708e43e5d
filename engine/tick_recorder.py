"""Recorded ticks: what a live or paper run saw, kept per provider, symbol and UTC day for
tick-level replays.

Layout: `<data_dir>/ticks/<provider>/<symbol>/<YYYY-MM-DD>.parquet` holds a day's ticks (time in
epoch seconds, price, size, tick type code of engine.dtypes.TICK_TYPES) in arrival order. While a
recorder runs it adds small `<YYYY-MM-DD>.part-*.parquet` files, each written atomically, so a
crash loses at most the ticks not yet flushed; closing the recorder folds the parts into the day
file (atomically too; the day file names the parts it took in, so a crash between the rename and
the parts' removal cannot count a tick twice). Readers take the day file plus any part it has not
taken in. The recorder never blocks the feed on disk: writes go to one worker thread.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import trio

from engine._parquet import (
    META_KEY,
    StoreError,
    StoreInfo,
    check_columns,
    encode_name,
    locked,
    provider_name,
    read_meta,
    read_table,
    write_atomic,
)
from engine.dtypes import TICK_TYPES, tick_dtype
from engine.paths import data_dir
from engine.shm import ShmError

if TYPE_CHECKING:
    from engine.feed import Feed

__all__ = ["TickRecorder", "record_ticks", "load_ticks", "list_tick_datasets", "ticks_dir"]

log = logging.getLogger("engine.store")

TICK_FIELDS = ("time", "price", "size", "type")
_DAY = 86400


def ticks_root() -> Path:
    return data_dir() / "ticks"


def ticks_dir(provider: str, symbol: str) -> Path:
    """Return the directory of a symbol's recorded ticks (it may not exist yet)."""
    prov = provider_name(provider)
    return ticks_root() / encode_name(prov, "provider") / encode_name(str(symbol), "symbol")


def _day_name(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def _day_of(name: str) -> int | None:
    try:
        return int(np.datetime64(name[:10], "D").astype(np.int64))
    except ValueError:
        return None


def _table(rows: np.ndarray, meta: dict) -> pa.Table:
    table = pa.table({name: np.ascontiguousarray(rows[name]) for name in TICK_FIELDS})
    meta = dict(meta, format=1, kind="ticks", rows=len(rows), tick_types=TICK_TYPES,
                first=float(rows["time"].min()) if len(rows) else None,
                last=float(rows["time"].max()) if len(rows) else None)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def _read(path: Path) -> np.ndarray:
    check_columns(path, TICK_FIELDS, "a tick file")
    table = read_table(path, list(TICK_FIELDS))
    out = np.zeros(table.num_rows, dtype=tick_dtype)
    for name in TICK_FIELDS:
        out[name] = table.column(name).to_numpy()
    return out


def _sorted(rows: np.ndarray) -> np.ndarray:
    # Stable: ticks of one instant keep their arrival order.
    return rows[np.argsort(rows["time"], kind="stable")]


def _day_files(directory: Path) -> dict[int, tuple[Path | None, list[Path]]]:
    """Per day: the day file (or None) and the parts it has not taken in, in write order."""
    days: dict[int, tuple[Path | None, list[Path]]] = {}
    if not directory.is_dir():
        return days
    for path in sorted(directory.glob("[!.]*.parquet")):
        day = _day_of(path.name)
        if day is None:
            continue
        main, parts = days.get(day, (None, []))
        if ".part-" in path.name:
            parts.append(path)
        else:
            main = path
        days[day] = (main, parts)
    for day, (main, parts) in days.items():
        if main is not None and parts:
            taken = set(read_meta(main)[0].get("parts", ()))
            days[day] = (main, [p for p in parts if p.name not in taken])
    return days


def _compact(directory: Path, day: int) -> None:
    """Fold a day's parts into its day file; remove them once the day file holds them."""
    with locked(directory):
        main = directory / f"{_day_name(day)}.parquet"
        parts = sorted(directory.glob(f"{_day_name(day)}.part-*.parquet"))
        if not parts:
            return
        taken = set(read_meta(main)[0].get("parts", ())) if main.exists() else set()
        fresh = [p for p in parts if p.name not in taken]
        if fresh:
            chunks = ([_read(main)] if main.exists() else []) + [_read(p) for p in fresh]
            rows = _sorted(np.concatenate(chunks))
            meta = read_meta(main)[0] if main.exists() else {}
            meta.update(parts=[p.name for p in parts])
            write_atomic(main, _table(rows, meta))
        for p in parts:
            p.unlink(missing_ok=True)


class TickRecorder:
    """Append the ticks of `symbols` (tick_dtype rows whose `sym` indexes `symbols`) to the store.

    Feed it with `add(rows)`, or `attach(feed)` to subscribe to a running feed: each batch's new
    rows are then copied from `feed.ticks`. Buffered rows are written as part files when
    `flush_rows` rows or `flush_seconds` of tick time (epoch s) have gathered, on `flush()` and on
    `close()`, which also folds the parts into day files. Use it as a context manager.
    """

    def __init__(self, provider: str, symbols: Sequence[str], *, flush_rows: int = 100_000,
                 flush_seconds: float = 60.0) -> None:
        self.provider = provider_name(provider)
        self.symbols = [str(s) for s in symbols]
        self.dirs = [ticks_dir(self.provider, s) for s in self.symbols]
        self.flush_rows = int(flush_rows)
        self.flush_seconds = float(flush_seconds)
        self.rows = 0  # rows written to disk so far
        self.dropped = 0  # rows the feed's tick buffer rolled away before we copied them
        self.errors: list[BaseException] = []
        self._buf: list[np.ndarray] = []
        self._buffered = 0
        self._touched: set[tuple[int, int]] = set()
        self._seq = 0
        self._feed: Feed | None = None
        self._seen = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self._closed = False

    # -- input ---------------------------------------------------------------------------------

    def attach(self, feed: Feed) -> TickRecorder:
        """Subscribe to `feed` and record every tick it stores from now on."""
        if list(feed.symbols) != self.symbols:
            raise StoreError(f"recorder symbols {self.symbols} differ from the feed's "
                             f"{list(feed.symbols)}")
        self._feed = feed
        # stats.ticks counts every row the feed pushed; it survives the tick buffer's rolls.
        self._seen = feed.stats.ticks
        feed.subscribe(self.on_batch)
        return self

    def detach(self) -> None:
        if self._feed is not None:
            self.on_batch([], [], [])  # the rows of a batch no subscriber call followed
            self._feed.unsubscribe(self.on_batch)
            self._feed = None

    def on_batch(self, quotes: list, bars: list, events: list) -> None:
        """Feed subscriber: copy the rows the feed pushed since the last call."""
        feed = self._feed
        if feed is None:
            return
        total = feed.stats.ticks
        new = total - self._seen
        if new <= 0:
            return
        self._seen = total
        try:
            rows = feed.ticks.array
        except ShmError:  # the feed has closed: every batch was copied when it came
            return
        if new > len(rows):
            # The buffer rolled more than once between calls: those rows are gone.
            self.dropped += new - len(rows)
            new = len(rows)
        self.add(rows[len(rows) - new:])

    def add(self, rows: np.ndarray) -> None:
        """Buffer tick rows (tick_dtype; `sym` indexes `symbols`); flush when enough gathered."""
        if self._closed:
            raise StoreError("the tick recorder is closed")
        rows = np.array(rows, dtype=tick_dtype, copy=True).reshape(-1)
        if not len(rows):
            return
        self._buf.append(rows)
        self._buffered += len(rows)
        if (self._buffered >= self.flush_rows
                or rows["time"][-1] - self._buf[0]["time"][0] >= self.flush_seconds):
            self.flush(wait=False)

    # -- output --------------------------------------------------------------------------------

    def flush(self, wait: bool = True) -> None:
        """Write buffered rows as part files (in the worker thread; `wait` for it to finish)."""
        if self._buf:
            rows = np.concatenate(self._buf)
            self._buf, self._buffered = [], 0
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tick-recorder")
            future = self._pool.submit(self._write, rows)
            future.add_done_callback(self._done)
            self._pending.append(future)
        if wait:
            for future in self._pending:
                future.exception()
            self._pending.clear()
        else:
            self._pending = [f for f in self._pending if not f.done()]

    def _done(self, future: Future) -> None:
        exc = future.exception()
        if exc is not None:
            self.errors.append(exc)
            log.error("tick recording failed: %s: %s", type(exc).__name__, exc)

    def _write(self, rows: np.ndarray) -> None:
        days = np.floor(rows["time"] / _DAY).astype(np.int64)
        for s in np.unique(rows["sym"]):
            if not 0 <= s < len(self.symbols):
                continue
            mine = rows["sym"] == s
            for day in np.unique(days[mine]):
                part = rows[mine & (days == day)]
                self._seq += 1
                first_ns = int(part["time"][0] * 1e9)
                name = f"{_day_name(day)}.part-{first_ns:020d}-{os.getpid()}-{self._seq:06d}.parquet"
                write_atomic(self.dirs[s] / name, _table(part, {"provider": self.provider,
                                                               "symbol": self.symbols[s]}))
                self._touched.add((int(s), int(day)))
                self.rows += len(part)

    def close(self) -> list[StoreInfo]:
        """Stop recording, write what is buffered, fold parts into day files; return the
        symbols' tick datasets. Raise StoreError if any write failed."""
        if self._closed:
            return []
        self.detach()
        self.flush(wait=True)
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for s, day in sorted(self._touched):
            try:
                _compact(self.dirs[s], day)
            except Exception as exc:  # noqa: BLE001 - the parts stay readable; report below
                self.errors.append(exc)
        if self.errors:
            exc = self.errors[0]
            raise StoreError(f"recording ticks of {self.provider}: {len(self.errors)} write(s) "
                             f"failed, first: {type(exc).__name__}: {exc}")
        touched = {s for s, _ in self._touched}
        return [info for info in list_tick_datasets()
                if info.provider == self.provider and info.symbol in
                {self.symbols[s] for s in touched}]

    def __enter__(self) -> TickRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def record_ticks(feed: Feed, provider: str | None = None, *, flush_every: float = 10.0,
                       task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """Record `feed`'s ticks until cancelled, flushing every `flush_every` seconds of the feed's
    clock; on cancellation write the rest and fold the day files (shielded, in a thread)."""
    recorder = TickRecorder(provider or feed.provider.name, feed.symbols).attach(feed)
    task_status.started(recorder)
    try:
        while True:
            await feed.clock.sleep_until(feed.clock.now() + flush_every)
            recorder.flush(wait=False)
    finally:
        recorder.detach()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(recorder.close)


def load_ticks(provider: str, symbol: str, start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """Return a symbol's recorded ticks with time in [start, end) epoch seconds, in time order.

    Rows are engine.dtypes.tick_dtype with `sym` 0 (set it to the symbol's position for a
    multi-symbol replay) and `index` numbering the rows.
    """
    directory = ticks_dir(provider, symbol)
    chunks = []
    for day, (main, parts) in sorted(_day_files(directory).items()):
        if start is not None and (day + 1) * _DAY <= start:
            continue
        if end is not None and day * _DAY >= end:
            continue
        chunks.extend(_read(p) for p in ([main] if main else []) + parts)
    if not chunks:
        return np.zeros(0, dtype=tick_dtype)
    rows = _sorted(np.concatenate(chunks))
    keep = np.ones(len(rows), dtype=bool)
    if start is not None:
        keep &= rows["time"] >= start
    if end is not None:
        keep &= rows["time"] < end
    rows = rows[keep]
    rows["sym"] = 0
    rows["index"] = np.arange(len(rows))
    return rows


def list_tick_datasets(errors: list[StoreError] | None = None) -> list[StoreInfo]:
    """Return every symbol with recorded ticks (timeframe 0; first/last floored to seconds)."""
    root = ticks_root()
    out: list[StoreInfo] = []
    if not root.is_dir():
        return out
    for directory in sorted(p for p in root.glob("[!.]*/[!.]*") if p.is_dir()):
        try:
            out.extend(_tick_info(directory))
        except StoreError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return out


def _tick_info(directory: Path) -> list[StoreInfo]:
    from urllib.parse import unquote

    rows, first, last = 0, None, None
    meta: dict[str, Any] = {}
    for main, parts in _day_files(directory).values():
        for path in ([main] if main else []) + parts:
            meta, n = read_meta(path)
            if not n:
                continue
            rows += n
            lo, hi = meta.get("first"), meta.get("last")
            if lo is None or hi is None:
                times = _read(path)["time"]
                lo, hi = float(times.min()), float(times.max())
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
    if not rows:
        return []
    provider = meta.get("provider") or unquote(directory.parent.name)
    symbol = meta.get("symbol") or unquote(directory.name)
    return [StoreInfo(provider, symbol, 0, int(np.floor(first)), int(np.floor(last)), rows,
                      directory)]
