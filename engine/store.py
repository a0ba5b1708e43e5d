"""The history store: OHLCV bars and recorded ticks kept as Parquet under the user's data directory.

Bars live in `<data_dir>/history/<provider>/<symbol>/<timeframe>.parquet`, one dataset per
provider, symbol and bar period (`1s.parquet`, `1m.parquet`, `1d.parquet`); ticks recorded from
live and paper runs in `<data_dir>/ticks/...` (see `engine.tick_recorder`, re-exported here). Names
are percent-encoded where they hold anything but letters, digits, `-`, `_` and `.`, and each file
carries its provider, symbol and timeframe in its metadata, so nothing is lost to the encoding.

Every write goes to a temporary file in the same directory, is fsynced and then renamed over the
old file (engine._parquet), under a lock on the symbol's directory: a backfill interrupted at any point (Ctrl-C,
kill -9, a full disk) leaves the previous file whole, and two processes saving the same dataset
cannot lose each other's bars. This module never deletes stored bars and never touches the
network itself: `backfill` runs a provider's `backfill_bars` like the feed does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

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
from engine.dtypes import ohlc_dtype
from engine.paths import data_dir
from engine.provider import Provider, ProviderError, load_provider
from engine.sampler import format_timeframe, parse_timeframe, resample_bars
from engine.shm import ShmArray
from engine.tick_recorder import TickRecorder, list_tick_datasets, load_ticks, record_ticks

__all__ = [
    "StoreError",
    "StoreInfo",
    "save_bars",
    "load_bars",
    "list_datasets",
    "backfill",
    "backfill_async",
    "import_file",
    "dataset_path",
    "provider_name",
    "TickRecorder",
    "record_ticks",
    "load_ticks",
    "list_tick_datasets",
]

log = logging.getLogger("engine.store")

# Stored columns: the spec's OHLCV fields without `index`, which is a buffer position, not data.
BAR_FIELDS: tuple[str, ...] = tuple(n for n in ohlc_dtype.names if n != "index")
_FORMAT = 1

# A backfill buffer holds this many rows per requested frame: providers page about 1000 bars a
# frame (SPEC.md) and the buffer is split in half between pushed and prepended rows.
_ROWS_PER_FRAME = 2000
_MIN_ROWS = 10_000
_MAX_ROWS = 1 << 24  # 16M rows, 1.2 GB of ohlc_dtype: past that, a backfill is cut (and warned)


# -- names and paths ------------------------------------------------------------------------------


def _file_stem(symbol: str) -> str:
    name = Path(symbol).name
    for suffix in (".csv.gz", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _symbol_name(provider: str, symbol: str) -> str:
    # A csvfile symbol may be a path: the dataset is named for the file, not where it lay.
    return _file_stem(symbol) if provider == "csvfile" else str(symbol)


def _timeframe(timeframe: int | str) -> int:
    try:
        return parse_timeframe(timeframe)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


def history_root() -> Path:
    """Return `<data_dir>/history`, where bar datasets live (it may not exist yet)."""
    return data_dir() / "history"


def dataset_path(provider: str, symbol: str, timeframe: int | str) -> Path:
    """Return the file of a bar dataset (it may not exist): history/<provider>/<symbol>/<tf>."""
    prov = provider_name(provider)
    sym = _symbol_name(prov, symbol)
    tf = format_timeframe(_timeframe(timeframe))
    return (history_root() / encode_name(prov, "provider") / encode_name(sym, "symbol")
            / f"{tf}.parquet")


# -- bars -----------------------------------------------------------------------------------------


def _as_bars(bars: np.ndarray) -> np.ndarray:
    bars = np.asarray(bars)
    if bars.dtype.names is None or not set(BAR_FIELDS) <= set(bars.dtype.names):
        raise StoreError(f"bars must have the OHLCV fields {', '.join(BAR_FIELDS)}; "
                         f"got dtype {bars.dtype}")
    out = np.zeros(len(bars), dtype=ohlc_dtype)
    for name in BAR_FIELDS:
        out[name] = bars[name]
    return out


def _dedupe_newest(bars: np.ndarray) -> np.ndarray:
    """Sort by time; of rows with the same time keep the last one (the newest data)."""
    if len(bars) == 0:
        return bars
    order = np.argsort(bars["time"], kind="stable")
    bars = bars[order]
    keep = np.ones(len(bars), dtype=bool)
    keep[:-1] = bars["time"][1:] != bars["time"][:-1]
    return bars[keep]


def _read_bars(path: Path, start: int | None = None, end: int | None = None) -> np.ndarray:
    filters = []
    if start is not None:
        filters.append(("time", ">=", int(start)))
    if end is not None:
        filters.append(("time", "<", int(end)))
    check_columns(path, BAR_FIELDS, "a bar dataset")
    table = read_table(path, list(BAR_FIELDS), filters or None)
    out = np.zeros(table.num_rows, dtype=ohlc_dtype)
    for name in BAR_FIELDS:
        out[name] = table.column(name).to_numpy()
    out["index"] = np.arange(len(out))
    return out


def _bars_table(bars: np.ndarray, provider: str, symbol: str, timeframe: int) -> pa.Table:
    meta = {"format": _FORMAT, "kind": "bars", "provider": provider, "symbol": symbol,
            "timeframe": timeframe, "first": int(bars["time"][0]), "last": int(bars["time"][-1]),
            "rows": len(bars)}
    table = pa.table({name: bars[name] for name in BAR_FIELDS})
    return table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def save_bars(provider: str, symbol: str, timeframe: int | str, bars: np.ndarray) -> StoreInfo:
    """Merge `bars` (OHLCV rows of `timeframe` seconds) into the stored dataset and return it.

    The result is the union by bar time (epoch seconds), sorted, one bar per time; where both
    hold a bar for the same time, the one in `bars` wins. The file is replaced atomically.
    """
    prov = provider_name(provider)
    sym = _symbol_name(prov, symbol)
    tf = _timeframe(timeframe)
    path = dataset_path(prov, sym, tf)
    new = _dedupe_newest(_as_bars(bars))
    with locked(path.parent):
        old = _read_bars(path) if path.exists() else np.zeros(0, dtype=ohlc_dtype)
        if len(new) == 0 and len(old) == 0:
            raise StoreError(f"no bars to store for {prov}/{sym} {format_timeframe(tf)}")
        merged = _dedupe_newest(np.concatenate([old, new])) if len(old) else new
        if len(new):
            write_atomic(path, _bars_table(merged, prov, sym, tf))
    return StoreInfo(prov, sym, tf, int(merged["time"][0]), int(merged["time"][-1]), len(merged),
                     path, added=len(merged) - len(old))


def _stored_timeframes(provider: str, symbol: str) -> dict[int, Path]:
    directory = dataset_path(provider, symbol, 1).parent
    out: dict[int, Path] = {}
    if directory.is_dir():
        for path in directory.glob("[!.]*.parquet"):
            try:
                out[parse_timeframe(path.name.removesuffix(".parquet"))] = path
            except ValueError:
                continue
    return out


def complete_resample(bars: np.ndarray, period: int, timeframe: int) -> np.ndarray:
    """Resample `period`-second bars to `timeframe` seconds, leaving out a first or last bar the
    data covers only in part (it would otherwise overwrite a whole stored bar on merge)."""
    if timeframe % period:
        raise StoreError(f"bars of {format_timeframe(period)} cannot make "
                         f"{format_timeframe(timeframe)} bars: {timeframe} s is not a multiple "
                         f"of {period} s")
    if len(bars) == 0 or timeframe == period:
        return bars
    out = resample_bars(bars, timeframe)
    if len(out) and int(bars["time"][0]) > int(out["time"][0]):
        out = out[1:]
    if len(out) and int(out["time"][-1]) + timeframe > int(bars["time"][-1]) + period:
        out = out[:-1]
    out["index"] = np.arange(len(out))
    return out


def load_bars(provider: str, symbol: str, timeframe: int | str,
              start: int | None = None, end: int | None = None) -> np.ndarray:
    """Return stored bars (ohlc_dtype) with open time in [start, end) epoch seconds.

    Without a dataset of `timeframe` itself, resample the coarsest stored one whose period
    divides it (bars the data covers only in part left out); raise StoreError if none does.
    """
    prov = provider_name(provider)
    sym = _symbol_name(prov, symbol)
    tf = _timeframe(timeframe)
    stored = _stored_timeframes(prov, sym)
    if tf in stored:
        return _read_bars(stored[tf], start, end)
    finer = sorted((p for p in stored if tf % p == 0), reverse=True)
    if not finer:
        have = ", ".join(format_timeframe(p) for p in sorted(stored)) or "nothing"
        raise StoreError(f"no {format_timeframe(tf)} bars stored for {prov}/{sym} (stored: {have});"
                         f" run `engine backfill {prov} {sym}` first")
    base = finer[0]
    lo = None if start is None else int(start) // tf * tf
    hi = None if end is None else -(-int(end) // tf) * tf
    out = complete_resample(_read_bars(stored[base], lo, hi), base, tf)
    if start is not None:
        out = out[out["time"] >= int(start)]
    if end is not None:
        out = out[out["time"] < int(end)]
    out["index"] = np.arange(len(out))
    return out


def _info_of(path: Path) -> StoreInfo:
    meta, rows = read_meta(path)
    parts = path.relative_to(history_root()).parts
    prov = meta.get("provider") or unquote(parts[0])
    sym = meta.get("symbol") or unquote(parts[1])
    tf = int(meta.get("timeframe") or parse_timeframe(path.name.removesuffix(".parquet")))
    if "first" in meta and "last" in meta:
        first, last = int(meta["first"]), int(meta["last"])
    else:
        times = read_table(path, ["time"]).column("time").to_numpy()
        first, last = (int(times[0]), int(times[-1])) if len(times) else (0, 0)
    return StoreInfo(prov, sym, tf, first, last, rows, path)


def list_datasets(errors: list[StoreError] | None = None) -> list[StoreInfo]:
    """Return every stored bar dataset, sorted by provider, symbol and timeframe.

    A file that cannot be read raises StoreError naming it, unless `errors` is given: then the
    error is appended there and the listing goes on.
    """
    root = history_root()
    out: list[StoreInfo] = []
    if not root.is_dir():
        return out
    for path in sorted(root.glob("[!.]*/[!.]*/[!.]*.parquet")):
        try:
            out.append(_info_of(path))
        except StoreError as exc:
            if errors is None:
                raise
            errors.append(exc)
        except FileNotFoundError:  # replaced or removed while we listed
            continue
    return sorted(out, key=lambda i: (i.provider, i.symbol, i.timeframe))


# -- backfill and import --------------------------------------------------------------------------


def _native_period(times: np.ndarray) -> int | None:
    steps = np.diff(times)
    steps = steps[steps > 0]
    return int(steps.min()) if len(steps) else None


async def _fetch(provider: Provider, sym: str, count: int) -> np.ndarray:
    capacity = max(count * _ROWS_PER_FRAME, _MIN_ROWS)
    while True:
        with ShmArray.create(provider.ohlc_dtype, capacity) as raw:
            async with trio.open_nursery() as nursery:
                await nursery.start(provider.backfill_bars, sym, raw, count)
            bars = _as_bars(raw.array)
            full = raw.room_before == 0 or raw.room_after == 0
        # A buffer filled to an edge may have cut the history: fetch again with room to spare.
        if not full or capacity >= _MAX_ROWS:
            if full:
                log.warning("backfill of %s filled %d rows: older history may be cut", sym, capacity)
            return bars
        capacity = min(capacity * 4, _MAX_ROWS)


def _period_of(provider: Provider, sym: str, bars: np.ndarray, timeframe: int | None) -> int:
    period = _native_period(bars["time"])
    if period is None:
        with contextlib.suppress(Exception):
            period = int(provider.symbol_info(sym).get("period") or 0) or None
    period = period or timeframe
    if period is None:
        raise StoreError(f"{sym}: a single bar does not tell its period; give a timeframe")
    return period


def _dataset_symbol(provider: Provider, prov: str, sym: str) -> str:
    if prov == "csvfile":
        # A bare csvfile name finds its file in any case: name the dataset for the file.
        with contextlib.suppress(Exception):
            return _file_stem(str(provider.symbol_info(sym)["path"]))
    return sym


async def backfill_async(provider_spec: str, symbols: list[str], timeframe: int | str | None = None,
                         count: int = 10, options: dict[str, Any] | None = None
                         ) -> list[StoreInfo]:
    """Run the provider's `backfill_bars` for each symbol (`count` frames) and store the bars.

    Bars are stored at the provider's own period, or resampled to `timeframe` seconds when given
    (a multiple of the provider's period; partly covered edge bars are left out). Each symbol is
    saved as soon as it is fetched; the first failure raises StoreError naming provider and
    symbol, leaving the symbols before it stored and every stored file intact.
    """
    if count < 1:
        raise StoreError(f"count must be at least 1 frame, got {count}")
    tf = None if timeframe is None else _timeframe(timeframe)
    try:
        provider = load_provider(provider_spec)
        provider.configure(**(options or {}))
    except ProviderError as exc:
        raise StoreError(str(exc)) from None
    prov = provider_name(provider_spec)
    out = []
    for sym in symbols:
        try:
            bars = await _fetch(provider, sym, count)
        except Exception as exc:
            raise StoreError(f"provider {provider.name!r}: backfill of {sym!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        if len(bars) == 0:
            raise StoreError(f"provider {provider.name!r} returned no bars for {sym!r}")
        bars = _dedupe_newest(bars)
        period = _period_of(provider, sym, bars, tf)
        if tf is not None:
            bars = complete_resample(bars, period, tf)
            if len(bars) == 0:
                raise StoreError(f"{sym}: {len(bars)} bars of {format_timeframe(period)} do not "
                                 f"cover one whole {format_timeframe(tf)} bar; raise --count")
        out.append(save_bars(prov, _dataset_symbol(provider, prov, sym), tf or period, bars))
    return out


def backfill(provider_spec: str, symbols: list[str], timeframe: int | str | None = None,
             count: int = 10, options: dict[str, Any] | None = None) -> list[StoreInfo]:
    """Run `backfill_async` in a fresh trio loop (for the CLI and notebooks)."""
    return trio.run(backfill_async, provider_spec, list(symbols), timeframe, count, options)


def import_file(path: str | os.PathLike, symbol: str | None = None,
                timeframe: int | str | None = None, timezone: str = "UTC") -> StoreInfo:
    """Store the bars of a CSV, gzipped CSV or Parquet file under provider `csvfile`.

    The file is read by providers.csvfile's reader (naive times in `timezone`); a malformed file
    raises StoreError naming file and line. `symbol` defaults to the file name without its
    suffix; bars keep the file's period unless `timeframe` (a multiple of it) is given.
    """
    from engine.datafiles import MalformedFileError, check_timezone, load

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    try:
        history = load(path, check_timezone(timezone))
    except (MalformedFileError, ValueError, OSError) as exc:
        raise StoreError(str(exc)) from None
    bars = history.bars
    period = _native_period(bars["time"]) or history.period
    tf = period if timeframe is None else _timeframe(timeframe)
    bars = complete_resample(bars, period, tf)
    if len(bars) == 0:
        raise StoreError(f"{path}: no whole {format_timeframe(tf)} bar in the file")
    return save_bars("csvfile", symbol or _file_stem(path.name), tf, bars)
