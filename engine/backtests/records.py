"""A backtest's results as data: trades, fills, orders and the equity curve as columns, which
become the rows of the JSON and pandas DataFrames (the same columns, indexed by UTC time).

Times stay epoch seconds (UTC) in the `time` and `*_time` fields; an ISO 8601 string
(`engine.timefmt`, dates for daily bars) sits beside each as `*_iso`. A fill log past its
bound moves its oldest rows to Parquet files and reads them back (`engine.backtests._spill`).
Nothing here runs a backtest or changes a result.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.backtests._spill import make_dir, read_part, write_part
from engine.backtests.trades import TRADE_FIELDS, Trades
from engine.clearing import _core
from engine.clearing.account import FillRecord
from engine.run_spec import FILLS_IN_MEMORY
from engine.timefmt import iso_array

__all__ = ["OrderLog", "FillLog", "FILL_DTYPE", "STATUSES", "trade_columns", "fill_columns",
           "order_columns", "equity_columns", "rows", "frame"]

# A fill as one row: the replay step it happened at, then the fields of `OrderFilled` (the
# symbol as its index in `FillLog.symbols`, side +1 buy / -1 sell, maker True for a maker fill;
# client ids are kept beside the rows, as references to the account's own strings).
FILL_DTYPE = _core.fill_dtype  # the rows an account logging its fills writes


class FillLog:
    """A run's fills in a growable columnar buffer (`FILL_DTYPE` rows, doubling as it fills),
    in the order they happened. Iterating gives each as a `FillRecord` (the attributes of an
    `OrderFilled`), built when read: a run keeps one 64-byte row per fill, not an object.

    At most `bound` rows stay in memory (None: all of them): when the buffer reaches it, its
    oldest half, client ids included, is written to a Parquet file (`engine.backtests._spill`)
    and dropped. Reading gives the same rows whether spilled or not; the files go with the log
    (garbage collected) or the process."""

    def __init__(self, symbols: Sequence[str], bound: int | None = FILLS_IN_MEMORY) -> None:
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)
                                  or bound < 1):
            raise ValueError(f"a fill log's bound is a number of rows of at least 1 (None: "
                             f"never spill), got {bound!r}")
        self.symbols = list(symbols)
        self._index = {s: j for j, s in enumerate(self.symbols)}
        self.bound = bound
        self._buf = np.zeros(256 if bound is None else min(256, bound), dtype=FILL_DTYPE)
        self.n = 0  # every row, spilled or not
        self._m = 0  # the rows in memory: the newest, after the spilled ones
        self._ids: list[str] = []  # the client ids of the rows in memory
        self._parts: list[tuple[Path, int]] = []  # each spilled file and its row count
        self._starts: list[int] = []  # the index of each spilled file's first row
        self._spilled = 0
        self._dir: Path | None = None
        self._cached: tuple[int, np.ndarray, list[str]] | None = None  # the part last indexed

    def add(self, step: int | Sequence[int], fills: Iterable) -> None:
        """Append `fills` (`FillRecord`s or `OrderFilled` events) as happening at `step` (or
        each at its own, `step` a sequence as long as `fills`)."""
        index = self._index
        rows = []
        steps = iter(step) if not isinstance(step, int) else None
        for f in fills:
            if steps is not None:
                step = next(steps)
            j = index.get(f.symbol)
            if j is None:
                j = index[f.symbol] = len(self.symbols)
                self.symbols.append(f.symbol)
            rows.append((step, f.time, f.fill_id, j, 1 if f.side == "buy" else -1,
                         f.liquidity == "maker", f.price, f.size, f.fee, f.remaining))
            self._ids.append(f.client_id)
        self._append(rows)

    def add_block(self, rows: np.ndarray, ids: list[str]) -> None:
        """Append fills logged as rows by an account (`Account.take_fill_rows`: `FILL_DTYPE`
        rows, their `sym` the index of a symbol of this log) and their client ids."""
        self._ids.extend(ids)
        self._append(rows)

    def _append(self, rows: list[tuple] | np.ndarray) -> None:
        if not len(rows):
            return
        end = self._m + len(rows)
        if end > len(self._buf):
            size = 2 * len(self._buf) if self.bound is None else min(2 * len(self._buf),
                                                                      self.bound)
            grown = np.zeros(max(end, size), dtype=FILL_DTYPE)
            grown[:self._m] = self._buf[:self._m]
            self._buf = grown
        self._buf[self._m:end] = rows
        self._m = end
        self.n += len(rows)
        if self.bound is not None and self._m >= self.bound:
            self._spill()

    def _spill(self) -> None:
        """Write the oldest half-bound chunks to Parquet until fewer than `bound` rows are
        left in memory."""
        bound = self.bound
        assert bound is not None
        chunk = max(1, bound // 2)
        done = 0
        try:
            while self._m - done >= bound:
                if self._dir is None:
                    self._dir = make_dir(self)
                path = self._dir / f"fills-{len(self._parts):06d}.parquet"
                write_part(path, self._buf[done:done + chunk], self._ids[done:done + chunk])
                self._parts.append((path, chunk))
                self._starts.append(self._spilled)
                self._spilled += chunk
                done += chunk
        finally:  # what was written leaves memory, even when a later part could not be
            self._drop(done)

    def _drop(self, done: int) -> None:
        """Drop the oldest `done` rows (spilled) from memory."""
        bound = self.bound
        assert bound is not None
        rest = self._m - done
        if len(self._buf) > bound:  # grown past the bound by one large batch: give it back
            kept = np.zeros(max(bound, rest), dtype=FILL_DTYPE)
            kept[:rest] = self._buf[done:self._m]
            self._buf = kept
        else:
            self._buf[:rest] = self._buf[done:self._m]
        del self._ids[:done]
        self._m = rest

    def _part(self, p: int) -> tuple[np.ndarray, list[str]]:
        path, n = self._parts[p]
        return read_part(path, FILL_DTYPE, n)

    @property
    def spilled(self) -> list[Path]:
        """The Parquet files the oldest rows were spilled to, oldest first."""
        return [path for path, _ in self._parts]

    @property
    def rows(self) -> np.ndarray:
        """The fills' rows: a view of the buffer while none spilled, else a new array of the
        spilled ones read back followed by those in memory."""
        if not self._parts:
            return self._buf[:self._m]
        out = np.empty(self.n, dtype=FILL_DTYPE)
        for (path, n), start in zip(self._parts, self._starts, strict=True):
            read_part(path, FILL_DTYPE, n, out[start:start + n], ids=False)
        out[self._spilled:] = self._buf[:self._m]
        return out

    @property
    def client_ids(self) -> list[str]:
        """The client id of each fill, in order."""
        ids: list[str] = []
        for p in range(len(self._parts)):
            ids.extend(self._part(p)[1])
        return ids + self._ids

    def __len__(self) -> int:
        return self.n

    def record(self, i: int) -> FillRecord:
        """Fill `i` as a `FillRecord` (negative `i` counts from the end)."""
        k = i + self.n if i < 0 else i
        if not 0 <= k < self.n:
            raise IndexError(f"fill {i} of {self.n}")
        if k >= self._spilled:
            row, cid = self._buf[k - self._spilled], self._ids[k - self._spilled]
        else:
            p = bisect_right(self._starts, k) - 1
            if self._cached is None or self._cached[0] != p:
                self._cached = (p, *self._part(p))  # one part kept: neighbours are read alike
            _, rows, ids = self._cached
            row, cid = rows[k - self._starts[p]], ids[k - self._starts[p]]
        (_, t, fid, j, side, maker, px, size, fee, rem) = row.tolist()
        return FillRecord(t, fid, cid, self.symbols[j], "buy" if side > 0 else "sell", px, size,
                          fee, "maker" if maker else "taker", rem)

    def __iter__(self) -> Iterator[FillRecord]:
        # Part by part, and in slices within one: never every fill's objects at once.
        for p in range(len(self._parts)):
            yield from self._records(*self._part(p))
        yield from self._records(self._buf[:self._m], self._ids)

    def _records(self, rows: np.ndarray, ids: list[str]) -> Iterator[FillRecord]:
        symbols = self.symbols
        for a in range(0, len(rows), _SLICE):
            r = rows[a:a + _SLICE]
            for cid, t, fid, j, side, maker, px, size, fee, rem in zip(
                    ids[a:a + _SLICE], r["time"].tolist(), r["fill_id"].tolist(),
                    r["sym"].tolist(), r["side"].tolist(), r["maker"].tolist(),
                    r["price"].tolist(), r["size"].tolist(), r["fee"].tolist(),
                    r["remaining"].tolist(), strict=True):
                yield FillRecord(t, fid, cid, symbols[j], "buy" if side > 0 else "sell", px,
                                 size, fee, "maker" if maker else "taker", rem)


# Rows turned into records at a time when iterating.
_SLICE = 65_536

Columns = dict[str, list]

# What became of an order by the end of the run.
STATUSES = ("working", "filled", "cancelled", "rejected")
_STATUS = {_core.PENDING: 0, _core.WORKING: 0, _core.FILLED: 1, _core.CANCELLED: 2}


@dataclass
class OrderLog:
    """Every order a run submitted (in submission order) and what the run's records say became
    of it: the account's row of each order that reached the book, the status of each row, and
    why the rejected and cancelled ones stopped. Read at the end of a run, looked at only when
    asked (`statuses`)."""

    submitted: list = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    reasons: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, broker: Any, cancelled: Iterable = ()) -> OrderLog:
        """The orders of `broker`'s run: its order list, its account's order records and its
        rejections; `cancelled`: the run's `OrderCancelled` events (for their reasons)."""
        account = broker.account
        rows = account._row
        reasons = {e.client_id: e.reason for e in cancelled}
        # A rejection of an order that reached the book refused a cancel or modify of it, not
        # the order itself.
        reasons.update((e.client_id, e.reason) for e in broker.rejections
                       if e.client_id not in rows)
        return cls(_Placed(broker), rows,
                   account.orders["status"][:account.n_orders].copy(), reasons)

    def statuses(self) -> list[str]:
        """Each order's final state, one of `STATUSES`."""
        rows = self.rows
        codes = self.codes.tolist()
        return [STATUSES[_STATUS[codes[row]]] if (row := rows.get(o.client_id)) is not None
                else "rejected" for o in self.submitted]


class _Placed(Sequence):
    """A broker's submitted orders (`PaperBroker.orders`), read from it when first needed: a
    replay's plain market orders are built as `SubmitOrder`s only if someone looks."""

    def __init__(self, broker: Any) -> None:
        self._broker: Any = broker
        self._orders: list | None = None

    def _all(self) -> list:
        if self._orders is None:
            self._orders = self._broker.orders
            self._broker = None
        return self._orders

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, i: Any) -> Any:
        return self._all()[i]

    def __iter__(self) -> Iterator:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return repr(self._all())

    def __reduce__(self) -> tuple:
        return (list, (self._all(),))  # pickled or copied as the list it reads


def _with_iso(columns: Columns, period: float | None) -> Columns:
    """`columns` with an `<name>_iso` column after each time column (`time`, `*_time`)."""
    out: Columns = {}
    for name, values in columns.items():
        out[name] = values
        if name == "time" or name.endswith("_time"):
            seconds = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            out[name + "_iso"] = iso_array(seconds, period)
    return out


def trade_columns(trades: Sequence[dict], period: float | None) -> Columns:
    """Trades (see `engine.backtests.trades`) as columns, `entry_time_iso` and `exit_time_iso`
    beside their times."""
    if isinstance(trades, Trades):
        return _with_iso(trades.lists(), period)
    return _with_iso({k: [t[k] for t in trades] for k in TRADE_FIELDS}, period)


def fill_columns(fills: Sequence, period: float | None) -> Columns:
    """Fills (`OrderFilled` events or records) as columns: time, time_iso, fill_id, client_id,
    symbol, side, price, size, fee, liquidity, remaining."""
    names = ("time", "fill_id", "client_id", "symbol", "side", "price", "size", "fee",
             "liquidity", "remaining")
    return _with_iso({k: [getattr(f, k) for f in fills] for k in names}, period)


def order_columns(log: OrderLog, fills: Iterable, period: float | None) -> Columns:
    """Orders as columns: as submitted (`time` is when the strategy placed it), then `status`
    (one of `STATUSES`), units `filled`, their size-weighted mean price `avg_fill_price` (None
    if none), the `fees` they paid and the `reason` a rejected or cancelled order gives."""
    done: dict[str, list[float]] = {}
    for f in fills:
        acc = done.setdefault(f.client_id, [0.0, 0.0, 0.0])
        acc[0] += f.size
        acc[1] += f.size * f.price
        acc[2] += f.fee
    orders = log.submitted
    filled = [done.get(o.client_id, (0.0, 0.0, 0.0)) for o in orders]
    columns: Columns = {k: [getattr(o, k) for o in orders] for k in (
        "time", "client_id", "symbol", "side", "order_type", "size", "limit_price",
        "stop_price", "tif", "reduce_only")}
    columns["status"] = log.statuses()
    columns["filled"] = [f[0] for f in filled]
    columns["avg_fill_price"] = [f[1] / f[0] if f[0] else None for f in filled]
    columns["fees"] = [f[2] for f in filled]
    columns["reason"] = [log.reasons.get(o.client_id) for o in orders]
    return _with_iso(columns, period)


def equity_columns(curve: np.ndarray, period: float | None) -> Columns:
    """The equity curve as columns: time, time_iso, equity, drawdown_pct."""
    return {"time": curve["time"].tolist(), "time_iso": iso_array(curve["time"], period),
            "equity": curve["equity"].tolist(), "drawdown_pct": curve["drawdown_pct"].tolist()}


def rows(columns: Columns) -> list[dict]:
    """Columns as a list of row dicts (the JSON's form)."""
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def frame(columns: Columns, time: str) -> Any:
    """Columns as a DataFrame indexed by the UTC times of column `time` (index named `utc`;
    a missing time is NaT)."""
    import pandas as pd

    df = pd.DataFrame(columns)
    seconds = np.array([np.nan if v is None else v for v in columns[time]], dtype=np.float64)
    df.index = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True), name="utc")
    return df
