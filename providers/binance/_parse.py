"""Binance spot formats, parsed: websocket frames (trade, aggTrade, bookTicker), REST aggTrades
rows, klines and exchange info. Pure functions over decoded data; no I/O, no clock.

Field names are Binance's documented ones (binance-spot-api-docs: web-socket-streams.md and
rest-api.md). Depth frames (`depthUpdate`, and partial-book snapshots `{"lastUpdateId", "bids",
"asks"}`) are recognized and ignored: this provider streams top of book from `bookTicker`, and a
full book would need its own snapshot-and-sequence protocol.

Every parser raises MalformedFrame, and nothing else, on any input (a wrong type, a 400-digit
integer, deep nesting), and refuses implausible values (providers._net.fields): NaN or infinite
numbers, non-positive prices, negative sizes, crossed books, times outside 1970..next year.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from engine.dtypes import ohlc_dtype
from engine.plausible import first_bad_bar
from providers._net import Book, Control, Instrument, InstrumentTable, MalformedFrame, Trade
from providers._net.errors import describe, guard
from providers._net.events import Event
from providers._net.fields import check_book, epoch_ms, ident, number, price, size

__all__ = ["parse_frame", "parse_agg_trades", "parse_klines", "parse_exchange_info",
           "parse_book_tickers", "INTERVALS"]

# Kline intervals whose bars open at multiples of their length since the epoch (the spec's
# alignment); weekly and monthly klines do not (the epoch was a Thursday), so they are left out.
INTERVALS = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
             "2h": 7200, "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400}
# Event types that carry nothing this provider streams.
_IGNORED = {"depthUpdate", "24hrTicker", "24hrMiniTicker", "kline", "avgPrice"}


def _side(data: dict) -> str | None:
    # m: "is the buyer the market maker?" -> then the seller took liquidity.
    maker = data.get("m")
    return None if not isinstance(maker, bool) else ("sell" if maker else "buy")


def _text(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:limit]


@guard("binance frame")
def parse_frame(frame: str | bytes) -> list[Event]:
    """Parse one frame of the combined (`/stream`) or raw (`/ws`) endpoint.

    Raise MalformedFrame (and nothing else) saying what is wrong, on whichever stream.
    """
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise MalformedFrame(f"not JSON ({describe(exc, 80)})", kind="not JSON") from None
    if not isinstance(msg, dict):
        raise MalformedFrame(f"expected a JSON object, got {type(msg).__name__}")
    stream = msg.get("stream")
    try:
        return _parse_message(msg)
    except MalformedFrame as exc:
        if exc.channel is None and isinstance(stream, str):
            exc.channel = stream.rpartition("@")[2][:40] or None
        raise


def _parse_message(msg: dict) -> list[Event]:
    if "id" in msg and ("result" in msg or "error" in msg):
        err = msg.get("error")
        if err:
            detail = err.get("msg", err) if isinstance(err, dict) else err
            return [Control("nack", f"request {_text(msg['id'], 40)}: {_text(detail)}")]
        return [Control("ack", f"request {_text(msg['id'], 40)}")]
    data = msg["data"] if "stream" in msg and "data" in msg else msg
    if not isinstance(data, dict):
        raise MalformedFrame(f"stream data is not an object: {_text(data, 60)}",
                             kind="stream data is not an object")
    kind = data.get("e")
    symbol = data.get("s")
    if not isinstance(symbol, str) or not symbol:
        if kind in _IGNORED or ("lastUpdateId" in data and "bids" in data):
            return []  # depth: an update, or a partial-book / REST depth snapshot
        raise MalformedFrame("no symbol ('s') in the frame")
    symbol = symbol[:40]
    if kind == "trade":
        what = "trade"
        tid = ident(data, "t", what, symbol)
        trade = Trade(tid, tid, price(data, "p", what, symbol), size(data, "q", what, symbol),
                      epoch_ms(data, "T", what, symbol), _side(data))
        return [(symbol, trade)]
    if kind == "aggTrade":
        return [(symbol, _agg(data, "aggTrade", symbol))]
    if kind is None and "u" in data and "b" in data:
        return [(symbol, _book(data, "bookTicker", symbol, ("b", "B", "a", "A"),
                               ident(data, "u", "bookTicker", symbol)))]
    if kind in _IGNORED:
        return []
    raise MalformedFrame(f"unknown event type {kind!r:.40}", symbol,
                         kind="unknown event type")


def _book(data: dict, what: str, symbol: str, keys: tuple[str, str, str, str],
          seq: int | None = None) -> Book:
    bid, bid_qty, ask, ask_qty = keys
    # An empty side is sent as price 0: leave it unknown rather than quote zero.
    book = Book(bid=price(data, bid, what, symbol, empty_zero=True),
                bid_size=size(data, bid_qty, what, symbol),
                ask=price(data, ask, what, symbol, empty_zero=True),
                ask_size=size(data, ask_qty, what, symbol), seq=seq)
    if book.bid is None:
        book.bid_size = None
    if book.ask is None:
        book.ask_size = None
    return check_book(book, what, symbol)


def _agg(row: Any, what: str, symbol: str | None) -> Trade:
    if not isinstance(row, dict):
        raise MalformedFrame(f"{what} row is not an object: {_text(row, 60)}", symbol,
                             kind=f"{what} row is not an object")
    first = ident(row, "f", what, symbol)
    last = ident(row, "l", what, symbol)
    if last < first:
        raise MalformedFrame(f"{what} last trade id {last} is before first {first}", symbol,
                             kind=f"{what} last trade id is before first")
    return Trade(first, last, price(row, "p", what, symbol), size(row, "q", what, symbol),
                 epoch_ms(row, "T", what, symbol), _side(row),
                 cursor=ident(row, "a", what, symbol))


@guard("binance aggTrades answer")
def parse_agg_trades(rows: Any, symbol: str) -> list[Trade]:
    """Parse a `GET /api/v3/aggTrades` answer into trades in id order."""
    if not isinstance(rows, list):
        raise MalformedFrame(f"aggTrades answer is not a list: {_text(rows, 80)}", symbol)
    trades = [_agg(row, "aggTrades", symbol) for row in rows]
    trades.sort(key=lambda t: t.last_id)
    return trades


@guard("binance bookTicker answer")
def parse_book_tickers(payload: Any) -> dict[str, Book]:
    """Parse a `GET /api/v3/ticker/bookTicker` answer (one object or a list) by symbol."""
    rows = payload if isinstance(payload, list) else [payload]
    out: dict[str, Book] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str):
            raise MalformedFrame(f"bookTicker row has no symbol: {_text(row, 80)}")
        sym = row["symbol"]
        out[sym] = _book(row, "bookTicker", sym, ("bidPrice", "bidQty", "askPrice", "askQty"))
    return out


@guard("binance klines answer")
def parse_klines(rows: Any, symbol: str, server_ms: int | None) -> tuple[np.ndarray, int | None]:
    """Parse `GET /api/v3/klines` rows into closed ohlc_dtype bars, ascending.

    A kline whose close time is not before `server_ms` (Binance's clock) is still forming and
    is dropped. Return the bars and the open time (ms) of the oldest row received, or None.
    Rows must be plausible bars (engine.plausible): finite positive prices below 1e12,
    high >= max(open, close) >= min(open, close) >= low, volume >= 0, a time since 1970 and
    before the end of next year; the first that is not is a MalformedFrame naming it.
    """
    if not isinstance(rows, list):
        raise MalformedFrame(f"klines answer is not a list: {_text(rows, 80)}", symbol)
    out = np.zeros(len(rows), dtype=ohlc_dtype)
    keep = np.ones(len(rows), dtype=bool)
    oldest: int | None = None
    for i, row in enumerate(rows):
        what = f"kline row {i}"
        if not isinstance(row, list) or len(row) < 9:
            raise MalformedFrame(f"{what} is not a 12-field array: {_text(row, 80)}", symbol,
                                 kind="kline row is not a 12-field array")
        open_ms, close_ms, n = (ident(row, k, what, symbol) for k in (0, 6, 8))
        o, h, low, c, v, qv = (number(row, k, what, symbol) for k in (1, 2, 3, 4, 5, 7))
        oldest = open_ms if oldest is None else min(oldest, open_ms)
        if server_ms is not None and close_ms >= server_ms:
            keep[i] = False
            continue
        wap = qv / v if v > 0 and math.isfinite(qv) else c
        out[i] = (0, open_ms // 1000, o, h, low, c, v, n, wap)
    bad = first_bad_bar(out[keep])
    if bad is not None:
        j, name, problem = bad
        i = int(np.flatnonzero(keep)[j])
        raise MalformedFrame(f"kline row {i}: {name} {float(out[i][name]):.12g} {problem}",
                             symbol, kind=f"kline row with an implausible {name}")
    out = out[keep]
    # A VWAP outside the bar (rounding, or a bad quote volume) is clipped into it.
    out["bar_wap"] = np.where(np.isfinite(out["bar_wap"]), out["bar_wap"], out["close"])
    out["bar_wap"] = np.clip(out["bar_wap"], out["low"], out["high"])
    return out[np.argsort(out["time"], kind="stable")], oldest


def _filters(entry: dict) -> dict[str, dict]:
    filters = entry.get("filters")
    return {f.get("filterType"): f for f in (filters if isinstance(filters, list) else [])
            if isinstance(f, dict)}


def _step(table: Any, key: str) -> float:
    """A filter's size or step: a number >= 0 (0 when absent: no constraint)."""
    value = table.get(key, 0) if isinstance(table, dict) else 0
    out = float(value or 0) if isinstance(value, str | int | float) else math.nan
    if not (math.isfinite(out) and out >= 0):
        raise ValueError(f"{key} {value!r:.40}")
    return out


@guard("binance exchangeInfo answer")
def parse_exchange_info(payload: Any) -> tuple[InstrumentTable, int | None]:
    """Parse `GET /api/v3/exchangeInfo`: the instruments, and the per-minute request-weight
    limit from its `rateLimits` (None when absent). An entry with unreadable filters (not
    numbers, negative, NaN) is left out."""
    if not isinstance(payload, dict) or not isinstance(payload.get("symbols"), list):
        raise MalformedFrame("exchangeInfo has no 'symbols' list")
    instruments = []
    for entry in payload["symbols"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("symbol"), str):
            continue
        filters = _filters(entry)
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
        try:
            tick = _step(filters.get("PRICE_FILTER"), "tickSize")
            step = _step(filters.get("LOT_SIZE"), "stepSize")
            min_qty = _step(filters.get("LOT_SIZE"), "minQty")
            min_notional = _step(notional, "minNotional") if "minNotional" in notional else None
        except (ValueError, OverflowError):
            continue
        sym = entry["symbol"]
        status = str(entry.get("status", "UNKNOWN"))[:40]
        instruments.append(Instrument(
            key=sym.lower(), venue_symbol=sym, rest_symbol=sym,
            base=str(entry.get("baseAsset", ""))[:40], quote=str(entry.get("quoteAsset", ""))[:40],
            tick_size=tick, lot_size=step, min_size=min_qty, min_notional=min_notional,
            status=status, trading=status == "TRADING"))
    weight = None
    limits = payload.get("rateLimits")
    for limit in limits if isinstance(limits, list) else []:
        if isinstance(limit, dict) and limit.get("rateLimitType") == "REQUEST_WEIGHT" \
                and limit.get("interval") == "MINUTE" and limit.get("intervalNum") == 1:
            value = limit.get("limit")
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
                weight = value
    return InstrumentTable("binance", instruments), weight
