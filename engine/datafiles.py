"""Parse an OHLCV history file (CSV, gzipped CSV or Parquet) into sorted `ohlc_dtype` rows.

Columns are found by name in any case: a time column (the first column when it has no name, or
one named date, datetime, time, timestamp, ...; a separate date and time column are joined), open,
high, low, close and an optional volume (0 when absent). Anything else (Adj Close, OpenInterest,
...) is ignored, so prices are the file's unadjusted ones. Times are ISO 8601 dates or datetimes
(`2024-01-31`, `2024/01/31`, `2024-01-31 09:30:00`, optionally with a UTC offset) or epoch
seconds, milliseconds, microseconds or nanoseconds (told apart by magnitude); naive ones are read
in the configured time zone. A file in strictly decreasing time order is reversed.

Rows must be plausible bars (engine.plausible: finite positive prices below 1e12, volume
>= 0, times from 1970 to the end of next year, low <= open, close <= high); the first row in file
order that is not is refused naming its line and column.

Conversion is vectorized with pyarrow; only when something is wrong do we locate the first bad
row (binary search over casts, then a scan of the file for its physical line) and raise
`MalformedFileError` naming file, line and column. This module never touches trio or shm.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.dtypes import ohlc_dtype
from engine.plausible import first_bad_bar

__all__ = ["History", "MalformedFileError", "load", "check_timezone"]


class MalformedFileError(ValueError):
    """A history file has a header or row the provider cannot read; the message says where."""


@dataclass(frozen=True)
class History:
    """The bars of one file, in strictly increasing time, plus what was learned reading it."""

    path: Path
    bars: np.ndarray  # ohlc_dtype; count = 0 (unknown), bar_wap = (open+high+low+close)/4
    period: int  # typical bar length in seconds (median spacing)
    tick_size: float | None  # finest price step the file's decimals show (None: not text)
    lot_size: float | None  # same for volume


def _norm(name: str) -> str:
    name = name.strip().lower()
    if name.startswith("__index_level_"):  # pandas' unnamed index in a Parquet file
        return ""
    return "".join(ch for ch in name if ch.isalnum())


# Preference order: the first of these found is the time column.
_TIME_NAMES = ("datetime", "timestamp", "date", "time", "opentime", "gmttime", "localtime", "ts")
_PRICE_NAMES = {
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
}


class _Locator:
    """Turns a data-row index into "file:line" (CSV) or "file: row n" (Parquet)."""

    def __init__(self, path: Path, line_of: Callable[[int], int] | None) -> None:
        self.path = path
        self._line_of = line_of

    def line(self, i: int) -> str:
        return f"line {self._line_of(i)}" if self._line_of else f"row {i + 1}"

    def at(self, i: int) -> str:
        return f"{self.path}:{self._line_of(i)}" if self._line_of else f"{self.path}: row {i + 1}"


# -- reading the raw columns ----------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _csv_header(path: Path) -> tuple[list[str], str]:
    try:
        with _open_text(path) as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise MalformedFileError(f"{path}: cannot read the header: {exc}") from None
    if not first.strip():
        raise MalformedFileError(f"{path}:1: no header (the file is empty or starts blank)")
    # The delimiter is whichever common one the header uses most (',' for a one-column file).
    delimiter = max(",;\t|", key=first.count)
    header = next(csv.reader([first], delimiter=delimiter))
    return [h.strip() for h in header], delimiter


def _csv_columns(path: Path, header: list[str], delimiter: str) -> tuple[list[pa.Array], _Locator]:
    names = [f"c{i}" for i in range(len(header))]
    lines: list[int] = []

    def line_of(i: int) -> int:
        if not lines:
            lines.extend(_record_lines(path, delimiter))
        return lines[i] if i < len(lines) else -1

    bad_rows: list[str] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # pyarrow does not know the row's line; _first_wrong_width finds it below.
        bad_rows.append(row.text)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise MalformedFileError(f"{path}: cannot be read as CSV: {exc}") from None
    if bad_rows:
        line, record = _first_wrong_width(path, delimiter, len(header))
        raise MalformedFileError(
            f"{path}:{line}: {len(record)} fields where the header has {len(header)}: "
            f"{delimiter.join(record)[:80]!r}"
        )
    columns = [table.column(n).combine_chunks() for n in names]
    return columns, _Locator(path, line_of)


def _records(path: Path, delimiter: str):
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        next(reader, None)
        for record in reader:
            if record:  # pyarrow skips blank lines too
                yield reader.line_num, record


def _record_lines(path: Path, delimiter: str) -> list[int]:
    return [line for line, _ in _records(path, delimiter)]


def _first_wrong_width(path: Path, delimiter: str, width: int) -> tuple[int, list[str]]:
    for line, record in _records(path, delimiter):
        if len(record) != width:
            return line, record
    return -1, []


def _read_parquet(path: Path) -> tuple[list[str], list[pa.Array], _Locator]:
    import pyarrow.parquet as pq  # here: a CSV run does not pay for it

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise MalformedFileError(f"{path}: cannot be read as Parquet: {exc}") from None
    columns = [col.combine_chunks() for col in table.columns]
    return list(table.column_names), columns, _Locator(path, None)


# -- converting columns ---------------------------------------------------------------------------


def _first_failing(arr: pa.Array, convert: Callable[[pa.Array], object]) -> int:
    """Index of the first element `convert` rejects, given that it rejects the whole array."""
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(arr.slice(lo, mid - lo))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
        else:
            lo = mid
    return lo


def _raw(arr: pa.Array, i: int) -> str:
    value = arr[i].as_py()
    return value if isinstance(value, str) else str(value)


_NUMPY_TYPES = {"double": np.float64, "float": np.float32, "int64": np.int64,
                "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint64": np.uint64,
                "uint32": np.uint32, "uint16": np.uint16, "uint8": np.uint8}


def _np(arr: pa.Array) -> np.ndarray:
    """A numpy copy of an arrow array. `Array.to_numpy` imports pandas on first use (a
    quarter of a second of `engine backtest`'s start-up) to look for extension types, so a
    plain numeric array without nulls is read from its data buffer instead."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    dtype = _NUMPY_TYPES.get(str(arr.type))
    if dtype is None or arr.null_count:
        return arr.to_numpy(zero_copy_only=False)
    size = np.dtype(dtype).itemsize
    data = arr.buffers()[1]
    if data is None:
        return np.zeros(len(arr), dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=len(arr), offset=arr.offset * size).copy()


def _first_null(arr: pa.Array) -> int:
    return int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))


def _to_float(arr: pa.Array) -> pa.Array:
    return pc.cast(arr, pa.float64())


def _to_finite_float(arr: pa.Array) -> pa.Array:
    out = _to_float(arr)
    if not np.isfinite(_np(out)).all():
        raise pa.ArrowInvalid("not a finite number")
    return out


def _bad_value(loc: _Locator, i: int, name: str, raw: str, what: str) -> MalformedFileError:
    if raw == "":
        return MalformedFileError(f"{loc.at(i)}: column {name!r} is empty")
    return MalformedFileError(f"{loc.at(i)}: column {name!r}: {raw!r} {what}")


def _numbers(arr: pa.Array, name: str, loc: _Locator) -> np.ndarray:
    if arr.null_count:
        raise MalformedFileError(f"{loc.at(_first_null(arr))}: column {name!r} is empty")
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        arr = pc.utf8_trim_whitespace(arr)
    elif not (
        pa.types.is_integer(arr.type)
        or pa.types.is_floating(arr.type)
        or pa.types.is_decimal(arr.type)
    ):
        raise MalformedFileError(f"{loc.path}: column {name!r} holds {arr.type}, not numbers")
    try:
        return _np(_to_finite_float(arr))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        i = _first_failing(arr, _to_finite_float)
        raw = _raw(arr, i)
        try:
            float(raw)
        except ValueError:
            raise _bad_value(loc, i, name, raw, "is not a number") from None
        raise _bad_value(loc, i, name, raw, "is not a finite number") from None


def _step(arr: pa.Array) -> float | None:
    """The finest step the decimals of a text column show (0.01 for '12.34'), else None."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)) or not len(arr):
        return None
    arr = pc.utf8_trim_whitespace(arr)
    if pc.any(pc.match_substring_regex(arr, "[eE]")).as_py():
        return None
    dot = _np(pc.find_substring(arr, "."))
    length = _np(pc.utf8_length(arr))
    decimals = int(np.where(dot >= 0, length - dot - 1, 0).max())
    return float(10.0**-decimals)


def _epoch_seconds(values: np.ndarray) -> np.ndarray:
    # 1e11 s is the year 5138 and 1e11 ms is 1973, so magnitude tells the unit of real data.
    top = float(np.abs(values).max()) if len(values) else 0.0
    unit = 1.0 if top < 1e11 else 1e3 if top < 1e14 else 1e6 if top < 1e17 else 1e9
    return np.floor(values / unit).astype(np.int64)


def _naive_to_seconds(ts: pa.Array, tz: str) -> np.ndarray:
    if tz != "UTC":
        # A wall time skipped by a DST change moves forward to the first valid instant.
        ts = pc.assume_timezone(ts, tz, ambiguous="earliest", nonexistent="latest")
    ns = _np(pc.cast(ts, pa.int64()))
    return np.floor_divide(ns, 1_000_000_000)


def _cast_naive(arr: pa.Array) -> pa.Array:
    return pc.cast(arr, pa.timestamp("ns"))


def _cast_aware(arr: pa.Array) -> pa.Array:
    return pc.cast(arr, pa.timestamp("ns", "UTC"))


def _times(arr: pa.Array, name: str, loc: _Locator, tz: str) -> np.ndarray:
    if arr.null_count:
        raise MalformedFileError(f"{loc.at(_first_null(arr))}: column {name!r} is empty")
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            return np.floor_divide(_np(pc.cast(_cast_aware(arr), pa.int64())), 1_000_000_000)
        return _naive_to_seconds(_cast_naive(arr), tz)
    if pa.types.is_date(t):
        return _naive_to_seconds(_cast_naive(arr), tz)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _epoch_seconds(_numbers(arr, name, loc))
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise MalformedFileError(f"{loc.path}: column {name!r} holds {t}, not dates or times")
    arr = pc.utf8_trim_whitespace(arr)
    # 2024/01/31 and 2024.01.31 (MetaTrader) are ISO dates with other separators.
    arr = pc.replace_substring_regex(arr, r"^(\d{4})[./](\d\d)[./](\d\d)", r"\1-\2-\3")
    for convert, finish in (
        (_to_finite_float, lambda a: _epoch_seconds(_np(a))),
        (_cast_naive, lambda a: _naive_to_seconds(a, tz)),
        (_cast_aware, lambda a: np.floor_divide(_np(pc.cast(a, pa.int64())), 1_000_000_000)),
    ):
        try:
            converted = convert(arr)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return finish(converted)
    # Locate the first value that fails the parse the first row succeeds with.
    head = arr.slice(0, 1)
    i, what = 0, ""
    for convert in (_cast_naive, _cast_aware, _to_finite_float):
        try:
            convert(head)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        i = _first_failing(arr, convert)
        other = _cast_aware if convert is _cast_naive else _cast_naive
        try:
            other(arr.slice(i, 1))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            break
        what = "has a UTC offset where" if other is _cast_aware else "has no UTC offset where"
        what += f" {loc.line(0)} {'has none' if other is _cast_aware else 'has one'}"
        break
    raise _bad_value(
        loc,
        i,
        name,
        _raw(arr, i),
        what
        or "is not a date or time (expected ISO 8601 such as 2024-01-31 or "
        "2024-01-31 09:30:00, optionally with a UTC offset, or epoch seconds)",
    )


# -- assembling bars ------------------------------------------------------------------------------


def _pick_columns(header: list[str], path: Path) -> tuple[list[int], dict[str, int]]:
    """Return the time column(s) and the price columns' positions; raise naming what is missing."""
    norm = [_norm(h) for h in header]
    shown = ", ".join(repr(h) for h in header)
    found: dict[str, int] = {}
    for field, aliases in _PRICE_NAMES.items():
        hits = [i for i, n in enumerate(norm) if n in aliases]
        if len(hits) > 1:
            raise MalformedFileError(
                f"{path}: columns {', '.join(repr(header[i]) for i in hits)} all look like "
                f"{field!r}; header found: {shown}"
            )
        if hits:
            found[field] = hits[0]
        elif field != "volume":
            raise MalformedFileError(
                f"{path}: missing required column {field!r} (any case); header found: {shown}"
            )
    if "date" in norm and "time" in norm and not {"datetime", "timestamp"} & set(norm):
        return [norm.index("date"), norm.index("time")], found
    for name in _TIME_NAMES:
        if name in norm:
            return [norm.index(name)], found
    if norm and norm[0] == "":
        return [0], found
    raise MalformedFileError(
        f"{path}: no time column: expected an unnamed first column or one named date, datetime, "
        f"time or timestamp; header found: {shown}"
    )


def _check_bars(bars: np.ndarray, loc: _Locator, columns: dict[str, tuple[str, pa.Array]]
                ) -> None:
    """Raise naming file, line and column of the first implausible bar (in file order)."""
    bad = first_bad_bar(bars)
    if bad is None:
        return
    i, field, problem = bad
    name, arr = columns[field]
    if problem.startswith(("is below", "is outside")):
        value = f"{float(bars[i][field]):.12g}"  # a relation: the numbers compared
    else:
        value = repr(_raw(arr, i))  # the value as the file spells it
    raise MalformedFileError(f"{loc.at(i)}: column {name!r}: {value} {problem}")


def _parse(path: Path, tz: str) -> History:
    if path.name.lower().endswith((".parquet", ".pq")):
        header, columns, loc = _read_parquet(path)
        time_cols, found = _pick_columns(header, path)
    else:
        # Header problems first: a missing column explains wrong-width rows better.
        header, delimiter = _csv_header(path)
        time_cols, found = _pick_columns(header, path)
        columns, loc = _csv_columns(path, header, delimiter)
    if len(columns[0]) == 0:
        raise MalformedFileError(f"{path}: has a header but no rows")
    if len(time_cols) == 2:
        d, t = (pc.cast(columns[i], pa.string()) for i in time_cols)
        time_arr = pc.binary_join_element_wise(d, t, " ")
        time_name = f"{header[time_cols[0]]} {header[time_cols[1]]}"
    else:
        time_arr, time_name = columns[time_cols[0]], header[time_cols[0]] or "(unnamed)"
    n = len(time_arr)
    bars = np.zeros(n, dtype=ohlc_dtype)
    bars["time"] = _times(time_arr, time_name, loc, tz)
    for field, i in found.items():
        bars[field] = _numbers(columns[i], header[i], loc)
    named = {field: (header[i], columns[i]) for field, i in found.items()}
    _check_bars(bars, loc, {"time": (time_name, time_arr), **named})
    order = np.arange(n)
    if n > 1 and bars["time"][-1] < bars["time"][0]:  # newest first, as some exports are
        bars, order = bars[::-1].copy(), order[::-1].copy()
    if n > 1:
        steps = np.diff(bars["time"])
        if (steps <= 0).any():
            j = int(np.argmax(steps <= 0)) + 1
            i, prev = int(order[j]), int(order[j - 1])
            raise MalformedFileError(
                f"{loc.at(i)}: column {time_name!r}: {_raw(time_arr, i)!r} is not after "
                f"{_raw(time_arr, prev)!r} ({loc.line(prev)}); rows must be in strictly "
                "increasing (or all in decreasing) time order, at most one bar a second"
            )
    # The VWAP of the four equal trades stream_quotes synthesizes per bar (see _replay).
    bars["bar_wap"] = (bars["open"] + bars["high"] + bars["low"] + bars["close"]) / 4
    bars["index"] = np.arange(n)  # row numbers, as the store writes them: replays read in place
    period = int(np.median(np.diff(bars["time"]))) if n > 1 else 60
    ohlc = [columns[found[f]] for f in ("open", "high", "low", "close")]
    steps_seen = [s for s in (_step(a) for a in ohlc) if s is not None]
    return History(
        path=path,
        bars=bars,
        period=max(period, 1),
        tick_size=min(steps_seen) if len(steps_seen) == 4 else None,
        lot_size=_step(columns[found["volume"]]) if "volume" in found else None,
    )


# -- cache ----------------------------------------------------------------------------------------

_CACHE_SIZE = 16
_cache: OrderedDict[tuple, History] = OrderedDict()
_cache_lock = threading.Lock()


def load(path: Path, tz: str = "UTC") -> History:
    """Parse `path` (naive times in zone `tz`), or return the cached parse of the same file."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size, tz)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    history = _parse(Path(path), tz)
    with _cache_lock:
        _cache[key] = history
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return history


def check_timezone(tz: str) -> str:
    """Return the canonical name of zone `tz` (IANA name, UTC or +HH:MM); raise ValueError."""
    tz = tz.strip()
    if tz.upper() in ("UTC", "Z", "GMT", "+00:00"):
        return "UTC"
    try:
        pc.assume_timezone(pa.array([0], pa.timestamp("s")), tz)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError):
        raise ValueError(
            f"timezone {tz!r} is unknown: use an IANA name such as 'America/New_York', "
            "'UTC' or an offset such as '+02:00'"
        ) from None
    return tz
