"""Binance spot formats, parsed: websocket frames (trade, aggTrade, bookTicker), REST aggTrades
rows, klines and exchange info. Pure functions over decoded data; no I/O, no clock.

Field names are Binance's documented ones (binance-spot-api-docs: web-socket-streams.md and
rest-api.md). Depth frames (`depthUpdate`, and partial-book snapshots `{"lastUpdateId", "bids",
"asks"}`) are recognized and ignored: this provider streams top of book from `bookTicker`, and a
full book would need its own snapshot-and-sequence protocol.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from engine.dtypes import ohlc_dtype
from providers._net import Book, Control, Instrument, InstrumentTable, MalformedFrame, Trade
from providers._net.events import Event

__all__ = ["parse_frame", "parse_agg_trades", "parse_klines", "parse_exchange_info",
           "parse_book_tickers", "INTERVALS"]

# Kline intervals whose bars open at multiples of their length since the epoch (the spec's
# alignment); weekly and monthly klines do not (the epoch was a Thursday), so they are left out.
INTERVALS = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
             "2h": 7200, "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400}
# Event types that carry nothing this provider streams.
_IGNORED = {"depthUpdate", "24hrTicker", "24hrMiniTicker", "kline", "avgPrice"}


def _num(data: dict, key: str, what: str, symbol: str | None, *, positive: bool = True) -> float:
    try:
        value = float(data[key])
    except KeyError:
        raise MalformedFrame(f"{what} has no field {key!r}", symbol) from None
    except (TypeError, ValueError):
        raise MalformedFrame(f"{what} field {key!r} is not a number: {data[key]!r}",
                             symbol) from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise MalformedFrame(f"{what} field {key!r} is out of range: {data[key]!r}", symbol)
    return value


def _int(data: dict, key: str, what: str, symbol: str | None) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedFrame(f"{what} field {key!r} is not a non-negative integer: {value!r}",
                             symbol)
    return value


def _side(data: dict) -> str | None:
    # m: "is the buyer the market maker?" -> then the seller took liquidity.
    maker = data.get("m")
    return None if not isinstance(maker, bool) else ("sell" if maker else "buy")


def parse_frame(frame: str | bytes) -> list[Event]:
    """Parse one frame of the combined (`/stream`) or raw (`/ws`) endpoint."""
    try:
        msg = json.loads(frame)
    except ValueError as exc:
        raise MalformedFrame(f"not JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise MalformedFrame(f"expected a JSON object, got {type(msg).__name__}")
    if "id" in msg and ("result" in msg or "error" in msg):
        err = msg.get("error")
        if err:
            detail = err.get("msg", err) if isinstance(err, dict) else err
            return [Control("nack", f"request {msg['id']}: {detail}")]
        return [Control("ack", f"request {msg['id']}")]
    data = msg["data"] if "stream" in msg and "data" in msg else msg
    if not isinstance(data, dict):
        raise MalformedFrame(f"stream data is not an object: {data!r:.60}")
    kind = data.get("e")
    symbol = data.get("s")
    if not isinstance(symbol, str) or not symbol:
        if kind in _IGNORED or ("lastUpdateId" in data and "bids" in data):
            return []  # depth: an update, or a partial-book / REST depth snapshot
        raise MalformedFrame("no symbol ('s') in the frame")
    if kind == "trade":
        what = "trade"
        tid = _int(data, "t", what, symbol)
        trade = Trade(tid, tid, _num(data, "p", what, symbol), _num(data, "q", what, symbol),
                      _int(data, "T", what, symbol) / 1000.0, _side(data))
        return [(symbol, trade)]
    if kind == "aggTrade":
        return [(symbol, _agg(data, "aggTrade", symbol))]
    if kind is None and "u" in data and "b" in data:
        what = "bookTicker"
        book = Book(bid=_num(data, "b", what, symbol, positive=False),
                    bid_size=_num(data, "B", what, symbol, positive=False),
                    ask=_num(data, "a", what, symbol, positive=False),
                    ask_size=_num(data, "A", what, symbol, positive=False),
                    seq=_int(data, "u", what, symbol))
        # An empty side is sent as price 0: leave it unknown rather than quote zero.
        if book.bid == 0:
            book.bid = book.bid_size = None
        if book.ask == 0:
            book.ask = book.ask_size = None
        return [(symbol, book)]
    if kind in _IGNORED:
        return []
    raise MalformedFrame(f"unknown event type {kind!r}", symbol)


def _agg(row: Any, what: str, symbol: str | None) -> Trade:
    if not isinstance(row, dict):
        raise MalformedFrame(f"{what} row is not an object: {row!r:.60}", symbol)
    first = _int(row, "f", what, symbol)
    last = _int(row, "l", what, symbol)
    if last < first:
        raise MalformedFrame(f"{what} last trade id {last} is before first {first}", symbol)
    return Trade(first, last, _num(row, "p", what, symbol), _num(row, "q", what, symbol),
                 _int(row, "T", what, symbol) / 1000.0, _side(row),
                 cursor=_int(row, "a", what, symbol))


def parse_agg_trades(rows: Any, symbol: str) -> list[Trade]:
    """Parse a `GET /api/v3/aggTrades` answer into trades in id order."""
    if not isinstance(rows, list):
        raise MalformedFrame(f"aggTrades answer is not a list: {rows!r:.80}", symbol)
    trades = [_agg(row, "aggTrades", symbol) for row in rows]
    trades.sort(key=lambda t: t.last_id)
    return trades


def parse_book_tickers(payload: Any) -> dict[str, Book]:
    """Parse a `GET /api/v3/ticker/bookTicker` answer (one object or a list) by symbol."""
    rows = payload if isinstance(payload, list) else [payload]
    out: dict[str, Book] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str):
            raise MalformedFrame(f"bookTicker row has no symbol: {row!r:.80}")
        sym = row["symbol"]
        book = Book(_num(row, "bidPrice", "bookTicker", sym, positive=False),
                    _num(row, "bidQty", "bookTicker", sym, positive=False),
                    _num(row, "askPrice", "bookTicker", sym, positive=False),
                    _num(row, "askQty", "bookTicker", sym, positive=False))
        if book.bid == 0:
            book.bid = book.bid_size = None
        if book.ask == 0:
            book.ask = book.ask_size = None
        out[sym] = book
    return out


def parse_klines(rows: Any, symbol: str, server_ms: int | None) -> tuple[np.ndarray, int | None]:
    """Parse `GET /api/v3/klines` rows into closed ohlc_dtype bars, ascending.

    A kline whose close time is not before `server_ms` (Binance's clock) is still forming and
    is dropped. Return the bars and the open time (ms) of the oldest row received, or None.
    """
    if not isinstance(rows, list):
        raise MalformedFrame(f"klines answer is not a list: {rows!r:.80}", symbol)
    out = np.zeros(len(rows), dtype=ohlc_dtype)
    keep = np.ones(len(rows), dtype=bool)
    oldest: int | None = None
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 9:
            raise MalformedFrame(f"kline row {i} is not a 12-field array: {row!r:.80}", symbol)
        try:
            open_ms, close_ms, n = int(row[0]), int(row[6]), int(row[8])
            o, h, low, c, v, qv = (float(row[k]) for k in (1, 2, 3, 4, 5, 7))
        except (TypeError, ValueError):
            raise MalformedFrame(f"kline row {i} has a non-numeric field: {row!r:.80}",
                                 symbol) from None
        oldest = open_ms if oldest is None else min(oldest, open_ms)
        if server_ms is not None and close_ms >= server_ms:
            keep[i] = False
            continue
        wap = qv / v if v > 0 else c
        out[i] = (0, open_ms // 1000, o, h, low, c, v, n, min(max(wap, low), h))
    out = out[keep]
    return out[np.argsort(out["time"], kind="stable")], oldest


def _filters(entry: dict) -> dict[str, dict]:
    return {f.get("filterType"): f for f in entry.get("filters", []) if isinstance(f, dict)}


def parse_exchange_info(payload: Any) -> tuple[InstrumentTable, int | None]:
    """Parse `GET /api/v3/exchangeInfo`: the instruments, and the per-minute request-weight
    limit from its `rateLimits` (None when absent)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("symbols"), list):
        raise MalformedFrame("exchangeInfo has no 'symbols' list")
    instruments = []
    for entry in payload["symbols"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("symbol"), str):
            continue
        filters = _filters(entry)
        price = filters.get("PRICE_FILTER", {})
        lot = filters.get("LOT_SIZE", {})
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
        try:
            tick = float(price.get("tickSize", 0) or 0)
            step = float(lot.get("stepSize", 0) or 0)
            min_qty = float(lot.get("minQty", 0) or 0)
            min_notional = float(notional["minNotional"]) if "minNotional" in notional else None
        except (TypeError, ValueError):
            continue
        sym = entry["symbol"]
        status = str(entry.get("status", "UNKNOWN"))
        instruments.append(Instrument(
            key=sym.lower(), venue_symbol=sym, rest_symbol=sym,
            base=str(entry.get("baseAsset", "")), quote=str(entry.get("quoteAsset", "")),
            tick_size=tick, lot_size=step, min_size=min_qty, min_notional=min_notional,
            status=status, trading=status == "TRADING"))
    weight = None
    for limit in payload.get("rateLimits", []) or []:
        if isinstance(limit, dict) and limit.get("rateLimitType") == "REQUEST_WEIGHT" \
                and limit.get("interval") == "MINUTE" and limit.get("intervalNum") == 1:
            weight = int(limit.get("limit", 0)) or None
    return InstrumentTable("binance", instruments), weight
