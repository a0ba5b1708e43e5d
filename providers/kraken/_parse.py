"""Kraken spot formats, parsed: websocket v2 frames (ticker, trade, heartbeat, status,
subscription answers) and REST /0/public answers (AssetPairs, Ticker, Trades, OHLC). Pure
functions over decoded data; no I/O, no clock.

Field names are Kraken's documented ones (docs.kraken.com: Spot WebSocket v2, Spot REST).

Every parser raises MalformedFrame, and nothing else, on any input (a wrong type, a 400-digit
integer, deep nesting), and refuses implausible values (providers._net.fields): NaN or infinite
numbers, non-positive prices, negative sizes, crossed books, times outside 1970..next year.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import numpy as np

from engine.dtypes import ohlc_dtype
from engine.plausible import first_bad_bar
from providers._net import Book, Control, Instrument, InstrumentTable, MalformedFrame, Trade
from providers._net.errors import describe, guard
from providers._net.events import Event
from providers._net.fields import (
    check_book,
    epoch_s,
    field,
    ident,
    number,
    plausible_time,
    price,
    size,
)
from providers._net.instruments import symbol_key

__all__ = ["parse_frame", "parse_asset_pairs", "parse_trades", "parse_ticker", "parse_ohlc",
           "rest_result", "INTERVALS", "v2_name"]

# OHLC intervals (minutes) whose bars open at multiples of their length since the epoch; the
# weekly (10080) and 15-day (21600) ones do not, so they are left out.
INTERVALS = {"1": 1, "5": 5, "15": 15, "30": 30, "60": 60, "240": 240, "1440": 1440}
# Websocket v2 names assets by their common codes where REST and v1 use Kraken's old ones.
V2_ASSETS = {"XBT": "BTC", "XDG": "DOGE"}
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")


def v2_name(wsname: str) -> str:
    """Return the websocket v2 symbol of a v1 `wsname` ("XBT/USD" -> "BTC/USD")."""
    return "/".join(V2_ASSETS.get(part, part) for part in wsname.split("/"))


def rfc3339(text: Any, what: str, symbol: str | None, key: str = "timestamp") -> float:
    """Return epoch seconds of an RFC 3339 time ("2023-09-25T07:49:37.708706Z"), which must
    be a plausible data time (1970..next year)."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    try:
        if m is None:
            raise ValueError(text)
        zone = "+00:00" if m[3] == "Z" else m[3]
        t = datetime.fromisoformat(m[1] + zone).timestamp() + float(m[2] or 0.0)
    except (ValueError, OverflowError):  # no such date (month 13, year 0)
        kind = f"{what} {key} is not RFC 3339"
        raise MalformedFrame(f"{kind}: {_text(text, 40)}", symbol, kind=kind) from None
    return plausible_time(t, text, what, key, symbol)


def _text(value: Any, limit: int = 80) -> str:
    return (value if isinstance(value, str) else repr(value))[:limit]


@guard("kraken frame")
def parse_frame(frame: str | bytes) -> list[Event]:
    """Parse one websocket v2 frame.

    Raise MalformedFrame (and nothing else) saying what is wrong, on whichever channel.
    """
    try:
        msg = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise MalformedFrame(f"not JSON ({describe(exc, 80)})", kind="not JSON") from None
    if not isinstance(msg, dict):
        raise MalformedFrame(f"expected a JSON object, got {type(msg).__name__}")
    if "method" in msg:
        return [_answer(msg)]
    channel = msg.get("channel")
    if channel == "heartbeat":
        return [Control("heartbeat")]
    if channel == "status":
        data = msg.get("data")
        first = data[0] if isinstance(data, list) and data else {}
        system = first.get("system") if isinstance(first, dict) else None
        return [Control("status", "" if system == "online" else f"system is {system!r:.40}")]
    if channel not in ("ticker", "trade"):
        if isinstance(channel, str):
            return [Control("ignore", channel[:40])]
        raise MalformedFrame("no 'channel' and no 'method' in the frame")
    try:
        return _rows(channel, msg.get("data"))
    except MalformedFrame as exc:
        exc.channel = channel
        raise


def _rows(channel: str, data: Any) -> list[Event]:
    if not isinstance(data, list):
        raise MalformedFrame(f"{channel} frame has no 'data' list")
    events: list[Event] = []
    for row in data:
        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str):
            raise MalformedFrame(f"{channel} row has no symbol: {_text(row)}",
                                 kind=f"{channel} row has no symbol")
        sym = row["symbol"][:40]
        if channel == "trade":
            tid = ident(row, "trade_id", "trade", sym)
            side = row.get("side") if row.get("side") in ("buy", "sell") else None
            events.append((sym, Trade(tid, tid, price(row, "price", "trade", sym),
                                      size(row, "qty", "trade", sym),
                                      rfc3339(row.get("timestamp"), "trade", sym), side)))
            continue
        # A side may be empty (price 0) on a thin book, as on Binance.
        book = Book(bid=price(row, "bid", "ticker", sym, empty_zero=True),
                    bid_size=size(row, "bid_qty", "ticker", sym),
                    ask=price(row, "ask", "ticker", sym, empty_zero=True),
                    ask_size=size(row, "ask_qty", "ticker", sym))
        if book.bid is None:
            book.bid_size = None
        if book.ask is None:
            book.ask_size = None
        check_book(book, "ticker", sym)
        if "last" in row:
            book.last = price(row, "last", "ticker", sym)
        if "timestamp" in row:
            book.time = rfc3339(row["timestamp"], "ticker", sym)
        if "volume" in row:
            book.extra["volume_24h"] = size(row, "volume", "ticker", sym)
        if "vwap" in row:
            # Kraken sends vwap 0 for a pair with no trade in 24 h.
            vwap = number(row, "vwap", "ticker", sym)
            if vwap != 0:
                book.extra["vwap_24h"] = price(row, "vwap", "ticker", sym)
        events.append((sym, book))
    return events


def _answer(msg: dict) -> Control:
    method = msg.get("method")
    if method in ("subscribe", "unsubscribe"):
        result = msg.get("result") if isinstance(msg.get("result"), dict) else {}
        symbol = result.get("symbol") or msg.get("symbol")
        symbol = symbol[:40] if isinstance(symbol, str) else None
        if msg.get("success") is True:
            return Control("ack", f"{_text(result.get('channel'), 40)} {symbol}", symbol)
        return Control("nack", _text(msg.get("error") or "subscription failed", 200), symbol)
    return Control("ignore", _text(method, 40))


@guard("kraken REST answer")
def rest_result(payload: Any, what: str) -> dict:
    """Return a REST answer's `result`, raising MalformedFrame with Kraken's own errors."""
    if not isinstance(payload, dict):
        raise MalformedFrame(f"{what}: answer is not an object")
    errors = payload.get("error") or []
    if errors:
        shown = ", ".join(_text(e, 100) for e in errors[:5]) if isinstance(errors, list) \
            else _text(errors, 200)
        raise MalformedFrame(f"{what}: {shown}")
    result = payload.get("result")
    if not isinstance(result, dict):
        raise MalformedFrame(f"{what}: answer has no 'result' object")
    return result


def _pair_rows(result: Any, what: str) -> tuple[str, Any]:
    if not isinstance(result, dict):
        raise MalformedFrame(f"{what}: result is not an object")
    keys = [k for k in result if k != "last"]
    if len(keys) != 1:
        raise MalformedFrame(f"{what}: expected one pair in the answer, got {_text(keys)}",
                             kind=f"{what}: expected one pair in the answer")
    return keys[0], result[keys[0]]


def _decimals(entry: dict, key: str) -> float:
    """10**-entry[key] for a count of decimals in 0..18 (default 8)."""
    value = entry.get(key, 8)
    if isinstance(value, bool) or not isinstance(value, int | str) or \
            not 0 <= int(value) <= 18:
        raise ValueError(f"{key} {value!r:.40}")
    return 10.0 ** -int(value)


def _positive(value: Any, key: str) -> float:
    out = float(value) if isinstance(value, int | float | str) and \
        not isinstance(value, bool) else math.nan
    if not (math.isfinite(out) and out > 0):
        raise ValueError(f"{key} {value!r:.40}")
    return out


@guard("kraken AssetPairs answer")
def parse_asset_pairs(result: dict) -> InstrumentTable:
    """Parse `GET /0/public/AssetPairs` (its `result`) into instruments named by their v2
    symbol ("btcusd"), also found by REST pair name ("xxbtzusd"), altname and v1 wsname.
    A pair with unreadable sizes (not numbers, not positive, NaN) is left out."""
    if not isinstance(result, dict):
        raise MalformedFrame("AssetPairs: result is not an object")
    instruments = []
    for pair, entry in result.items():
        if not isinstance(entry, dict) or pair.endswith(".d") or \
                not isinstance(entry.get("wsname"), str):
            continue  # dark-pool books (".d") have no public websocket feed
        wsname = entry["wsname"][:40]
        venue = v2_name(wsname)
        base, _, quote = venue.partition("/")
        try:
            tick = _positive(entry["tick_size"], "tick_size") if entry.get("tick_size") \
                else _decimals(entry, "pair_decimals")
            lot = _decimals(entry, "lot_decimals")
            ordermin = _positive(entry["ordermin"], "ordermin") if entry.get("ordermin") \
                else lot
            costmin = _positive(entry["costmin"], "costmin") if entry.get("costmin") else None
        except (TypeError, ValueError, OverflowError):
            continue
        status = str(entry.get("status", "online"))[:40]
        altname = entry.get("altname") if isinstance(entry.get("altname"), str) else pair
        instruments.append(Instrument(
            key=symbol_key(venue), venue_symbol=venue, rest_symbol=altname, base=base,
            quote=quote, tick_size=tick, lot_size=lot, min_size=ordermin, min_notional=costmin,
            status=status, trading=status != "delisted",
            aliases=(symbol_key(pair), symbol_key(altname), symbol_key(wsname)),
            extra={"rest_pair": pair, "wsname": wsname,
                   # Kraken's own asset codes ("XXBT", "ZUSD"): what Balance answers name.
                   "base_asset": str(entry.get("base", base))[:20],
                   "quote_asset": str(entry.get("quote", quote))[:20]}))
    return InstrumentTable("kraken", instruments)


@guard("kraken Ticker answer")
def parse_ticker(result: dict) -> dict[str, Book]:
    """Parse `GET /0/public/Ticker` (its `result`) into books by REST pair name."""
    if not isinstance(result, dict):
        raise MalformedFrame("Ticker: result is not an object")
    out: dict[str, Book] = {}
    for pair, row in result.items():
        what = f"Ticker row for {pair[:40]}"
        if not isinstance(row, dict):
            raise MalformedFrame(f"{what} is not an object", pair, kind="Ticker row is not an "
                                 "object")
        ask, bid, close = (field(row, k, what, pair) for k in ("a", "b", "c"))
        book = Book(bid=price(bid, 0, f"{what} 'b'", pair, empty_zero=True),
                    bid_size=size(bid, 2, f"{what} 'b'", pair),
                    ask=price(ask, 0, f"{what} 'a'", pair, empty_zero=True),
                    ask_size=size(ask, 2, f"{what} 'a'", pair),
                    last=price(close, 0, f"{what} 'c'", pair))
        if book.bid is None:
            book.bid_size = None
        if book.ask is None:
            book.ask_size = None
        out[pair] = check_book(book, what, pair)
    return out


@guard("kraken Trades answer")
def parse_trades(result: dict, symbol: str) -> tuple[list[Trade], str | None]:
    """Parse `GET /0/public/Trades` (its `result`): trades in id order and the `last` cursor.

    Rows are [price, volume, time, side b/s, type m/l, misc, trade_id].
    """
    _, rows = _pair_rows(result, "Trades")
    if not isinstance(rows, list):
        raise MalformedFrame("Trades: pair rows are not a list", symbol)
    trades = []
    for i, row in enumerate(rows):
        what = f"Trades row {i}"
        if not isinstance(row, list) or len(row) < 7:
            raise MalformedFrame(f"{what} without trade_id: {_text(row)}", symbol,
                                 kind="Trades row without trade_id")
        side = {"b": "buy", "s": "sell"}.get(row[3]) if isinstance(row[3], str) else None
        tid = ident(row, 6, what, symbol)
        trades.append(Trade(tid, tid, price(row, 0, what, symbol), size(row, 1, what, symbol),
                            epoch_s(row, 2, what, symbol), side))
    trades.sort(key=lambda tr: tr.last_id)
    last = result.get("last")
    if last is not None and (isinstance(last, bool) or not isinstance(last, int | str)
                             or len(str(last)) > 40):
        raise MalformedFrame(f"Trades: 'last' is not a cursor: {_text(last, 40)}", symbol,
                             kind="Trades: 'last' is not a cursor")
    return trades, None if last is None else str(last)


@guard("kraken OHLC answer")
def parse_ohlc(result: dict, symbol: str) -> np.ndarray:
    """Parse `GET /0/public/OHLC` (its `result`) into closed ohlc_dtype bars, ascending.

    Rows are [time, open, high, low, close, vwap, volume, count]; the last row is the
    current, not-yet-committed bar (Kraken says it is always present) and is dropped.
    Rows must be plausible bars (engine.plausible), as for Binance's klines.
    """
    _, rows = _pair_rows(result, "OHLC")
    if not isinstance(rows, list):
        raise MalformedFrame("OHLC: pair rows are not a list", symbol)
    rows = rows[:-1]
    out = np.zeros(len(rows), dtype=ohlc_dtype)
    for i, row in enumerate(rows):
        what = f"OHLC row {i}"
        if not isinstance(row, list) or len(row) < 8:
            raise MalformedFrame(f"{what} is not an 8-field array: {_text(row)}", symbol,
                                 kind="OHLC row is not an 8-field array")
        t, n = ident(row, 0, what, symbol), ident(row, 7, what, symbol)
        o, h, low, c, vwap, v = (number(row, k, what, symbol) for k in (1, 2, 3, 4, 5, 6))
        out[i] = (0, t, o, h, low, c, v, n, vwap if v > 0 and vwap > 0 else c)
    bad = first_bad_bar(out)
    if bad is not None:
        i, name, problem = bad
        raise MalformedFrame(f"OHLC row {i}: {name} {float(out[i][name]):.12g} {problem}",
                             symbol, kind=f"OHLC row with an implausible {name}")
    # A VWAP outside the bar (Kraken rounds it) is clipped into it.
    out["bar_wap"] = np.where(np.isfinite(out["bar_wap"]), out["bar_wap"], out["close"])
    out["bar_wap"] = np.clip(out["bar_wap"], out["low"], out["high"])
    return out[np.argsort(out["time"], kind="stable")]
