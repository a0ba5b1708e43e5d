"""Kraken spot formats, parsed: websocket v2 frames (ticker, trade, heartbeat, status,
subscription answers) and REST /0/public answers (AssetPairs, Ticker, Trades, OHLC). Pure
functions over decoded data; no I/O, no clock.

Field names are Kraken's documented ones (docs.kraken.com: Spot WebSocket v2, Spot REST).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

import numpy as np

from engine.dtypes import ohlc_dtype
from providers._net import Book, Control, Instrument, InstrumentTable, MalformedFrame, Trade
from providers._net.events import Event
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


def rfc3339(text: Any, what: str, symbol: str | None) -> float:
    """Return epoch seconds of an RFC 3339 time ("2023-09-25T07:49:37.708706Z")."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise MalformedFrame(f"{what} timestamp is not RFC 3339: {text!r}", symbol)
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + zone).timestamp() + float(m[2] or 0.0)


def _num(data: dict, key: str, what: str, symbol: str | None, *, positive: bool = True) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedFrame(f"{what} field {key!r} is missing or not a number: {value!r}",
                             symbol)
    try:
        out = float(value)
    except ValueError:
        raise MalformedFrame(f"{what} field {key!r} is not a number: {value!r}",
                             symbol) from None
    if not math.isfinite(out) or out < 0 or (positive and out == 0):
        raise MalformedFrame(f"{what} field {key!r} is out of range: {value!r}", symbol)
    return out


def parse_frame(frame: str | bytes) -> list[Event]:
    """Parse one websocket v2 frame."""
    try:
        msg = json.loads(frame)
    except ValueError as exc:
        raise MalformedFrame(f"not JSON ({exc})") from None
    if not isinstance(msg, dict):
        raise MalformedFrame(f"expected a JSON object, got {type(msg).__name__}")
    if "method" in msg:
        return [_answer(msg)]
    channel = msg.get("channel")
    if channel == "heartbeat":
        return [Control("heartbeat")]
    if channel == "status":
        data = msg.get("data") or [{}]
        system = data[0].get("system") if isinstance(data[0], dict) else None
        return [Control("status", "" if system == "online" else f"system is {system!r}")]
    if channel not in ("ticker", "trade"):
        if isinstance(channel, str):
            return [Control("ignore", channel)]
        raise MalformedFrame("no 'channel' and no 'method' in the frame")
    data = msg.get("data")
    if not isinstance(data, list):
        raise MalformedFrame(f"{channel} frame has no 'data' list")
    events: list[Event] = []
    for row in data:
        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str):
            raise MalformedFrame(f"{channel} row has no symbol: {row!r:.80}")
        sym = row["symbol"]
        if channel == "trade":
            tid = row.get("trade_id")
            if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
                raise MalformedFrame(f"trade field 'trade_id' is not an integer: {tid!r}", sym)
            side = row.get("side") if row.get("side") in ("buy", "sell") else None
            events.append((sym, Trade(tid, tid, _num(row, "price", "trade", sym),
                                      _num(row, "qty", "trade", sym),
                                      rfc3339(row.get("timestamp"), "trade", sym), side)))
        else:
            book = Book(bid=_num(row, "bid", "ticker", sym, positive=False),
                        bid_size=_num(row, "bid_qty", "ticker", sym, positive=False),
                        ask=_num(row, "ask", "ticker", sym, positive=False),
                        ask_size=_num(row, "ask_qty", "ticker", sym, positive=False))
            if "last" in row:
                book.last = _num(row, "last", "ticker", sym)
            if "timestamp" in row:
                book.time = rfc3339(row["timestamp"], "ticker", sym)
            for key in ("volume", "vwap"):
                if isinstance(row.get(key), int | float) and not isinstance(row[key], bool):
                    book.extra[f"{key}_24h"] = float(row[key])
            events.append((sym, book))
    return events


def _answer(msg: dict) -> Control:
    method = msg.get("method")
    if method in ("subscribe", "unsubscribe"):
        result = msg.get("result") if isinstance(msg.get("result"), dict) else {}
        symbol = result.get("symbol") or msg.get("symbol")
        if msg.get("success") is True:
            return Control("ack", f"{result.get('channel')} {symbol}", symbol)
        return Control("nack", str(msg.get("error") or "subscription failed"), symbol)
    return Control("ignore", str(method))


def rest_result(payload: Any, what: str) -> dict:
    """Return a REST answer's `result`, raising MalformedFrame with Kraken's own errors."""
    if not isinstance(payload, dict):
        raise MalformedFrame(f"{what}: answer is not an object")
    errors = payload.get("error") or []
    if errors:
        raise MalformedFrame(f"{what}: {', '.join(map(str, errors))}")
    result = payload.get("result")
    if not isinstance(result, dict):
        raise MalformedFrame(f"{what}: answer has no 'result' object")
    return result


def _pair_rows(result: dict, what: str) -> tuple[str, Any]:
    keys = [k for k in result if k != "last"]
    if len(keys) != 1:
        raise MalformedFrame(f"{what}: expected one pair in the answer, got {keys}")
    return keys[0], result[keys[0]]


def parse_asset_pairs(result: dict) -> InstrumentTable:
    """Parse `GET /0/public/AssetPairs` (its `result`) into instruments named by their v2
    symbol ("btcusd"), also found by REST pair name ("xxbtzusd"), altname and v1 wsname."""
    instruments = []
    for pair, entry in result.items():
        if not isinstance(entry, dict) or pair.endswith(".d") or "wsname" not in entry:
            continue  # dark-pool books (".d") have no public websocket feed
        wsname = str(entry["wsname"])
        venue = v2_name(wsname)
        base, _, quote = venue.partition("/")
        try:
            tick = float(entry.get("tick_size") or 10.0 ** -int(entry.get("pair_decimals", 8)))
            lot = 10.0 ** -int(entry.get("lot_decimals", 8))
            ordermin = float(entry.get("ordermin") or lot)
            costmin = float(entry["costmin"]) if entry.get("costmin") else None
        except (TypeError, ValueError):
            continue
        status = str(entry.get("status", "online"))
        altname = str(entry.get("altname", pair))
        instruments.append(Instrument(
            key=symbol_key(venue), venue_symbol=venue, rest_symbol=altname, base=base,
            quote=quote, tick_size=tick, lot_size=lot, min_size=ordermin, min_notional=costmin,
            status=status, trading=status != "delisted",
            aliases=(symbol_key(pair), symbol_key(altname), symbol_key(wsname)),
            extra={"rest_pair": pair, "wsname": wsname}))
    return InstrumentTable("kraken", instruments)


def parse_ticker(result: dict) -> dict[str, Book]:
    """Parse `GET /0/public/Ticker` (its `result`) into books by REST pair name."""
    out: dict[str, Book] = {}
    for pair, row in result.items():
        try:
            ask, bid, close = row["a"], row["b"], row["c"]
            out[pair] = Book(bid=float(bid[0]), bid_size=float(bid[2]), ask=float(ask[0]),
                             ask_size=float(ask[2]), last=float(close[0]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise MalformedFrame(f"Ticker row for {pair} is not a/b/c arrays: {row!r:.80}",
                                 pair) from None
    return out


def parse_trades(result: dict, symbol: str) -> tuple[list[Trade], str | None]:
    """Parse `GET /0/public/Trades` (its `result`): trades in id order and the `last` cursor.

    Rows are [price, volume, time, side b/s, type m/l, misc, trade_id].
    """
    _, rows = _pair_rows(result, "Trades")
    if not isinstance(rows, list):
        raise MalformedFrame("Trades: pair rows are not a list", symbol)
    trades = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 7:
            raise MalformedFrame(f"Trades row without trade_id: {row!r:.80}", symbol)
        try:
            price, qty, t, tid = float(row[0]), float(row[1]), float(row[2]), int(row[6])
        except (TypeError, ValueError):
            raise MalformedFrame(f"Trades row has a non-numeric field: {row!r:.80}",
                                 symbol) from None
        if not (math.isfinite(price) and price > 0 and math.isfinite(qty) and qty >= 0):
            raise MalformedFrame(f"Trades row is out of range: {row!r:.80}", symbol)
        side = {"b": "buy", "s": "sell"}.get(row[3])
        trades.append(Trade(tid, tid, price, qty, t, side))
    trades.sort(key=lambda tr: tr.last_id)
    last = result.get("last")
    return trades, None if last is None else str(last)


def parse_ohlc(result: dict, symbol: str) -> np.ndarray:
    """Parse `GET /0/public/OHLC` (its `result`) into closed ohlc_dtype bars, ascending.

    Rows are [time, open, high, low, close, vwap, volume, count]; the last row is the
    current, not-yet-committed bar (Kraken says it is always present) and is dropped.
    """
    _, rows = _pair_rows(result, "OHLC")
    if not isinstance(rows, list):
        raise MalformedFrame("OHLC: pair rows are not a list", symbol)
    rows = rows[:-1]
    out = np.zeros(len(rows), dtype=ohlc_dtype)
    for i, row in enumerate(rows):
        try:
            t, n = int(row[0]), int(row[7])
            o, h, low, c, vwap, v = (float(row[k]) for k in (1, 2, 3, 4, 5, 6))
        except (TypeError, ValueError, IndexError):
            raise MalformedFrame(f"OHLC row {i} is malformed: {row!r:.80}", symbol) from None
        wap = vwap if v > 0 and vwap > 0 else c
        out[i] = (0, t, o, h, low, c, v, n, min(max(wap, low), h))
    return out[np.argsort(out["time"], kind="stable")]
