"""A backtest's results as rows: trades, fills, orders and the equity curve, as the JSON holds
them and as pandas DataFrames (the same columns, indexed by UTC time).

Times stay epoch seconds (UTC) in the `time` and `*_time` fields; an ISO 8601 string
(`engine.timefmt.iso`, dates for daily bars) sits beside each as `*_iso`. Nothing here runs a
backtest or changes a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtests.trades import TRADE_FIELDS
from engine.clearing import _core
from engine.timefmt import iso_array

__all__ = ["OrderLog", "STATUSES", "TRADE_COLUMNS", "FILL_FIELDS", "ORDER_FIELDS", "EQUITY_FIELDS", "trade_records",
           "fill_records", "order_records", "equity_records", "frame"]

TRADE_COLUMNS = tuple(c for f in TRADE_FIELDS
                      for c in ((f, f + "_iso") if f.endswith("_time") else (f,)))
FILL_FIELDS = ("time", "time_iso", "fill_id", "client_id", "symbol", "side", "price", "size",
               "fee", "liquidity", "remaining")
ORDER_FIELDS = ("time", "time_iso", "client_id", "symbol", "side", "order_type", "size",
                "limit_price", "stop_price", "tif", "reduce_only", "status", "filled",
                "avg_fill_price", "fees", "reason")
EQUITY_FIELDS = ("time", "time_iso", "equity", "drawdown_pct")

# What became of an order by the end of the run.
STATUSES = ("working", "filled", "cancelled", "rejected")
_STATUS = {_core.PENDING: 0, _core.WORKING: 0, _core.FILLED: 1, _core.CANCELLED: 2}


@dataclass
class OrderLog:
    """Every order a run submitted (in submission order), what became of it (an index into
    `STATUSES`) and why, for the rejected and cancelled ones."""

    submitted: list = field(default_factory=list)
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    reasons: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, broker: Any, cancelled: Iterable = ()) -> OrderLog:
        """Read the final state of each order from the broker's order list, the account's order
        records and its rejections; `cancelled`: the run's `OrderCancelled` events (reasons)."""
        account = broker.account
        submitted = list(broker.orders)
        rows = account._row
        row = np.array([rows.get(o.client_id, -1) for o in submitted], dtype=np.int64)
        status = np.full(len(submitted), 3, dtype=np.int8)  # never on the book: rejected
        booked = row >= 0
        codes = account.orders["status"][row[booked]]
        status[booked] = np.array([_STATUS[c] for c in codes.tolist()], dtype=np.int8)
        reasons = {e.client_id: e.reason for e in cancelled}
        # A rejection of an order that reached the book refused a cancel or modify of it, not
        # the order itself.
        reasons.update((e.client_id, e.reason) for e in broker.rejections
                       if e.client_id not in rows)
        return cls(submitted, status, reasons)


def _iso_beside(rows: list[dict], keys: Sequence[str], period: float | None) -> None:
    for key in keys:
        values = iso_array(np.array([np.nan if r[key] is None else r[key] for r in rows],
                                    dtype=np.float64), period) if rows else []
        for r, v in zip(rows, values, strict=True):
            r[key + "_iso"] = v


def trade_records(trades: Iterable[dict], period: float | None) -> list[dict]:
    """Trades (see `backtests.trades`) with `entry_time_iso` and `exit_time_iso`."""
    rows = [dict(t) for t in trades]
    _iso_beside(rows, ("entry_time", "exit_time"), period)
    return [{k: r.get(k) for k in TRADE_COLUMNS} for r in rows]


def fill_records(fills: Iterable, period: float | None) -> list[dict]:
    """Fills (`OrderFilled` events or records) as rows of `FILL_FIELDS`."""
    rows = [{"time": f.time, "fill_id": f.fill_id, "client_id": f.client_id, "symbol": f.symbol,
             "side": f.side, "price": f.price, "size": f.size, "fee": f.fee,
             "liquidity": f.liquidity, "remaining": f.remaining} for f in fills]
    _iso_beside(rows, ("time",), period)
    return [{k: r[k] for k in FILL_FIELDS} for r in rows]


def order_records(log: OrderLog, fills: Iterable, period: float | None) -> list[dict]:
    """Orders as rows of `ORDER_FIELDS`: as submitted (time is when the strategy placed it),
    then status (`STATUSES`), units filled, their size-weighted mean price (None if none), the
    fees they paid and the reason a rejected or cancelled order gives."""
    done: dict[str, list[float]] = {}
    for f in fills:
        acc = done.setdefault(f.client_id, [0.0, 0.0, 0.0])
        acc[0] += f.size
        acc[1] += f.size * f.price
        acc[2] += f.fee
    rows = []
    for o, s in zip(log.submitted, log.status.tolist(), strict=True):
        size, value, fees = done.get(o.client_id, (0.0, 0.0, 0.0))
        rows.append({"time": o.time, "client_id": o.client_id, "symbol": o.symbol,
                     "side": o.side, "order_type": o.order_type, "size": o.size,
                     "limit_price": o.limit_price, "stop_price": o.stop_price, "tif": o.tif,
                     "reduce_only": o.reduce_only, "status": STATUSES[s], "filled": size,
                     "avg_fill_price": value / size if size else None, "fees": fees,
                     "reason": log.reasons.get(o.client_id)})
    _iso_beside(rows, ("time",), period)
    return [{k: r[k] for k in ORDER_FIELDS} for r in rows]


def equity_records(curve: np.ndarray, period: float | None) -> list[dict]:
    """The equity curve (time, equity, drawdown_pct) as rows of `EQUITY_FIELDS`."""
    times = curve["time"].tolist()
    return [{"time": t, "time_iso": s, "equity": e, "drawdown_pct": d}
            for t, s, e, d in zip(times, iso_array(curve["time"], period),
                                  curve["equity"].tolist(), curve["drawdown_pct"].tolist(),
                                  strict=True)]


def frame(rows: list[dict], columns: Sequence[str], time: str) -> Any:
    """`rows` as a DataFrame of `columns` indexed by the UTC times of column `time` (index
    named `utc`; a missing time is NaT)."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(columns))
    seconds = pd.to_numeric(df[time], errors="coerce").astype("float64")
    df.index = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True), name="utc")
    return df
