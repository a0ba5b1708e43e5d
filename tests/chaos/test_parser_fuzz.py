"""Every parser of venue data, fuzzed: only its malformed-frame error (MalformedFrame) escapes,
and whatever it accepts is plausible.

Two kinds of input, both derandomized with bounded example counts so the file runs in seconds:
valid frames and REST answers (the venues' documented shapes) with one field mutated (a
400-digit integer, NaN, infinity, a negative or zero number, a wrong type, a missing key, nesting
deeper than the interpreter's stack), and arbitrary JSON and text. Accepted output is checked:
finite positive prices below 1e12, sizes >= 0, plausible times, books not crossed, bars with
high >= max(open, close) >= min(open, close) >= low.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.plausible import MAX_ID, MAX_PRICE, MAX_SIZE, time_ceiling
from providers._net import (
    Book,
    Control,
    InstrumentTable,
    MalformedFrame,
    RateLimited,
    RateLimiter,
    Trade,
)
from providers._net.http import Response, _message
from providers.binance import _parse as bn
from providers.kraken import _parse as kr

FUZZ = settings(max_examples=100, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

T_MS = 1_723_161_255_342  # 2024-08-08, the recorded Binance frames' day
T_S = T_MS // 1000



@contextlib.contextmanager
def logging_disabled() -> Iterator[None]:
    # Each rate-limit answer logs its wait; hundreds of examples need not.
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# -- valid inputs, as the venues document them -------------------------------------------------

BINANCE_FRAMES = {
    "trade": {"stream": "btcusdt@trade", "data": {
        "e": "trade", "E": T_MS + 1, "s": "BTCUSDT", "t": 3735683259, "p": "61837.63000000",
        "q": "0.02000000", "T": T_MS, "m": True, "M": True}},
    "aggTrade": {"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": T_MS + 1, "s": "BTCUSDT", "a": 700_001, "p": "61837.63",
        "q": "0.5", "f": 3735683259, "l": 3735683261, "T": T_MS, "m": False, "M": True}},
    "bookTicker": {"stream": "btcusdt@bookTicker", "data": {
        "u": 50093239212, "s": "BTCUSDT", "b": "61837.63000000", "B": "3.78826000",
        "a": "61837.64000000", "A": "1.54698000"}},
    "depth": {"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": T_MS, "s": "BTCUSDT", "U": 50093239203, "u": 50093239207,
        "b": [["55653.87000000", "0.00000000"]], "a": [["61838.04000000", "0.32332000"]]}},
    "ack": {"result": None, "id": 1},
    "nack": {"error": {"code": 2, "msg": "Invalid request"}, "id": 1},
}
KRAKEN_FRAMES = {
    "trade": {"channel": "trade", "type": "update", "data": [{
        "symbol": "BTC/USD", "side": "buy", "price": 61800.1, "qty": 0.01,
        "ord_type": "market", "trade_id": 5001, "timestamp": "2024-08-08T23:54:15.342000Z"}]},
    "ticker": {"channel": "ticker", "type": "update", "data": [{
        "symbol": "BTC/USD", "bid": 61800.0, "bid_qty": 0.7, "ask": 61800.1, "ask_qty": 0.5,
        "last": 61800.1, "volume": 123.4, "vwap": 61750.2, "low": 61000.0, "high": 62000.0,
        "change": 1.5, "change_pct": 0.01, "timestamp": "2024-08-08T23:54:15.342000Z"}]},
    "status": {"channel": "status", "type": "update", "data": [{
        "api_version": "v2", "connection_id": 4242, "system": "online", "version": "2.0.9"}]},
    "heartbeat": {"channel": "heartbeat"},
    "ack": {"method": "subscribe", "result": {"channel": "trade", "snapshot": False,
                                              "symbol": "BTC/USD"}, "success": True,
            "time_in": "2024-08-08T23:54:15.342000Z", "req_id": 1},
    "nack": {"error": "Currency pair not supported DOGE/BTC", "method": "subscribe",
             "success": False, "symbol": "DOGE/BTC", "req_id": 1},
}

KLINE = [T_MS - T_MS % 60_000, "61800.00", "61850.00", "61790.00", "61837.63", "12.5",
         T_MS - T_MS % 60_000 + 59_999, "772000.0", 120, "6.0", "370000.0", "0"]
OHLC_ROW = [T_S - T_S % 60, "61800.0", "61850.0", "61790.0", "61837.6", "61820.0", "12.5", 120]

# name: (parse(payload), a valid payload)
REST: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "binance aggTrades": (lambda p: bn.parse_agg_trades(p, "BTCUSDT"), [
        {"a": 700_001, "p": "61837.63", "q": "0.02", "f": 5001, "l": 5002, "T": T_MS,
         "m": True, "M": True},
        {"a": 700_002, "p": "61837.64", "q": "0.1", "f": 5003, "l": 5003, "T": T_MS + 5,
         "m": False, "M": True}]),
    "binance bookTicker": (bn.parse_book_tickers, [
        {"symbol": "BTCUSDT", "bidPrice": "61837.63", "bidQty": "3.7", "askPrice": "61837.64",
         "askQty": "1.5"},
        {"symbol": "ETHUSDT", "bidPrice": "2650.10", "bidQty": "9", "askPrice": "2650.11",
         "askQty": "4"}]),
    "binance klines": (lambda p: bn.parse_klines(p, "btcusdt", T_MS + 3_600_000), [
        KLINE, [KLINE[0] + 60_000, *KLINE[1:6], KLINE[6] + 60_000, *KLINE[7:]]]),
    "binance exchangeInfo": (bn.parse_exchange_info, {
        "timezone": "UTC", "serverTime": T_MS,
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                        "intervalNum": 1, "limit": 6000}],
        "symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC",
                     "quoteAsset": "USDT", "filters": [
                         {"filterType": "PRICE_FILTER", "tickSize": "0.01"},
                         {"filterType": "LOT_SIZE", "stepSize": "0.00001", "minQty": "0.00001"},
                         {"filterType": "NOTIONAL", "minNotional": "5.00000000"}]}]}),
    # The result is handed, unread, to the parsers below: only its type matters here.
    "kraken result": (lambda p: isinstance(kr.rest_result(p, "/0/public/Ticker"), dict),
                      {"error": [], "result": {"XXBTZUSD": {}}}),
    "kraken AssetPairs": (kr.parse_asset_pairs, {"XXBTZUSD": {
        "altname": "XBTUSD", "wsname": "XBT/USD", "base": "XXBT", "quote": "ZUSD",
        "pair_decimals": 1, "lot_decimals": 8, "ordermin": "0.0001", "costmin": "0.5",
        "tick_size": "0.1", "status": "online"}}),
    "kraken Ticker": (kr.parse_ticker, {"XXBTZUSD": {
        "a": ["61800.10000", "1", "0.50000000"], "b": ["61800.00000", "1", "0.70000000"],
        "c": ["61800.00000", "0.01000000"], "v": ["10.0", "20.0"], "t": [100, 200],
        "o": "61700.00000"}}),
    "kraken Trades": (lambda p: kr.parse_trades(p, "BTC/USD"), {"XXBTZUSD": [
        ["61800.00000", "0.01000000", T_MS / 1000, "b", "m", "", 5001],
        ["61800.10000", "0.20000000", T_MS / 1000 + 0.25, "s", "l", "", 5002]],
        "last": str(T_MS * 1_000_000)}),
    "kraken OHLC": (lambda p: kr.parse_ohlc(p, "btcusd"), {"XXBTZUSD": [
        OHLC_ROW, [OHLC_ROW[0] + 60, *OHLC_ROW[1:]], [OHLC_ROW[0] + 120, *OHLC_ROW[1:]]],
        "last": OHLC_ROW[0] + 120}),
}
FRAMES: dict[str, tuple[Callable[[str | bytes], Any], dict[str, Any]]] = {
    "binance": (bn.parse_frame, BINANCE_FRAMES),
    "kraken": (kr.parse_frame, KRAKEN_FRAMES),
}


# -- what accepted output must look like -------------------------------------------------------

def _price_ok(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x) and 0 < x < MAX_PRICE


def _size_ok(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x) and 0 <= x < MAX_SIZE


def _time_ok(t: Any) -> bool:
    return isinstance(t, float) and 0 <= t < time_ceiling()


def _check_trade(t: Trade) -> None:
    assert 0 <= t.first_id <= t.last_id <= MAX_ID
    assert _price_ok(t.price), t
    assert _size_ok(t.size), t
    assert _time_ok(t.time), t
    assert t.side in (None, "buy", "sell")


def _check_book(b: Book) -> None:
    for px, sz in ((b.bid, b.bid_size), (b.ask, b.ask_size)):
        assert (px is None and sz is None) or (_price_ok(px) and _size_ok(sz)), b
    assert b.bid is None or b.ask is None or b.bid < b.ask, f"crossed: {b}"
    assert b.last is None or _price_ok(b.last), b
    assert b.time is None or _time_ok(b.time), b
    assert b.seq is None or 0 <= b.seq <= MAX_ID
    assert all(isinstance(v, float) and math.isfinite(v) for v in b.extra.values()), b


def _check_bars(bars: np.ndarray) -> None:
    o, h, low, c, v = (bars[f] for f in ("open", "high", "low", "close", "volume"))
    assert np.isfinite(bars["bar_wap"]).all()
    assert ((0 < low) & (low <= np.minimum(o, c)) & (np.maximum(o, c) <= h)
            & (h < MAX_PRICE)).all(), bars
    assert (np.isfinite(v) & (v >= 0)).all(), bars
    assert ((bars["time"] >= 0) & (bars["time"] < time_ceiling())).all(), bars
    assert ((low <= bars["bar_wap"]) & (bars["bar_wap"] <= h)).all(), bars


def _check_output(out: Any) -> None:
    """Assert everything a parser returned is plausible, whatever its shape."""
    if isinstance(out, Control):
        assert isinstance(out.detail, str)
        assert len(out.detail) <= 400
        assert out.symbol is None or isinstance(out.symbol, str)
    elif isinstance(out, Trade):
        _check_trade(out)
    elif isinstance(out, Book):
        _check_book(out)
    elif isinstance(out, np.ndarray):
        _check_bars(out)
    elif isinstance(out, InstrumentTable):
        for inst in out.instruments:
            for x in (inst.tick_size, inst.lot_size, inst.min_size):
                assert math.isfinite(x), inst
                assert x >= 0, inst
            assert inst.min_notional is None or (math.isfinite(inst.min_notional)
                                                 and inst.min_notional >= 0)
    elif isinstance(out, list | tuple):
        for item in out:
            _check_output(item)
    elif isinstance(out, dict):
        for value in out.values():
            _check_output(value)
    else:
        assert out is None or isinstance(out, str | int), out


def _outcome(parse: Callable[[Any], Any], payload: Any) -> str:
    """Run `parse`: MalformedFrame is the only error allowed; what it accepts must be plausible.
    Return "refused" or "accepted"."""
    try:
        out = parse(payload)
    except MalformedFrame as exc:
        refused = exc
    else:
        _check_output(out)
        return "accepted"
    # One short line for the log: what is wrong, without the whole frame.
    assert 0 < len(refused.reason) < 400, refused.reason
    assert 0 < len(refused.kind) <= 200
    return "refused"


# -- mutations: one field of a valid input ----------------------------------------------------

DEEP = "\x00deep\x00"  # stands for nesting deeper than json.loads (or repr) can follow

NASTY = st.one_of(
    st.sampled_from([
        10**400, -10**400, 2**63, 2**64, -1, 0, -(2**63) - 1, 10**30, -0.0, 1e308, -1e308,
        1e-320, math.nan, math.inf, -math.inf, "NaN", "nan", "Infinity", "-Infinity", "inf",
        "1e400", "-1", "0", "-0", "1e12", "1e308", "0x10", "1_000", " 5 ", "", "abc", "9" * 400,
        "\u0661\u0662", True, False, None, [], {}, [1, 2], {"a": 1}, DEEP,
        "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2024-13-45T99:99:99Z",
    ]),
    st.integers(), st.floats(), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                          max_size=2),
)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, (*prefix, i))
    return out


def _nested(depth: int) -> list:
    root: list = []
    node = root
    for _ in range(depth):
        child: list = []
        node.append(child)
        node = child
    return root


@st.composite
def mutated(draw: st.DrawFn, template: Any) -> tuple[Any, int]:
    """A copy of `template` with one field replaced or deleted; and the depth DEEP stands for."""
    obj = copy.deepcopy(template)
    path = draw(st.sampled_from(_paths(obj)))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.integers(0, 5)) == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(NASTY)
    return obj, draw(st.sampled_from([30, 900, 2_000, 100_000]))


def _frame_text(obj: Any, depth: int) -> str:
    text = json.dumps(obj)
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)


def _payload(obj: Any, depth: int) -> Any:
    if obj == DEEP:
        return _nested(min(depth, 5_000))
    if isinstance(obj, dict):
        return {k: _payload(v, depth) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_payload(v, depth) for v in obj]
    return obj


def test_every_template_parses_as_it_is():
    """The valid inputs the mutations start from are accepted (so mutations test something)."""
    for parse, frames in FRAMES.values():
        for frame in frames.values():
            assert _outcome(parse, json.dumps(frame)) == "accepted"
    for parse, payload in REST.values():
        assert _outcome(parse, payload) == "accepted"


@pytest.mark.parametrize(("venue", "kind"), [(v, k) for v, (_, frames) in FRAMES.items()
                                             for k in frames])
@FUZZ
@given(data=st.data())
def test_a_frame_with_one_field_mutated_is_parsed_or_refused(venue, kind, data):
    parse, frames = FRAMES[venue]
    obj, depth = data.draw(mutated(frames[kind]))
    _outcome(parse, _frame_text(obj, depth))


@pytest.mark.parametrize("name", sorted(REST))
@FUZZ
@given(data=st.data())
def test_a_rest_answer_with_one_field_mutated_is_parsed_or_refused(name, data):
    parse, template = REST[name]
    obj, depth = data.draw(mutated(template))
    _outcome(parse, _payload(obj, depth))


# -- arbitrary input ------------------------------------------------------------------------------

FIELD_NAMES = sorted({str(k) for _, frames in FRAMES.values() for f in frames.values()
                      for p in _paths(f) for k in p if isinstance(k, str)}
                     | {"stream", "data", "result", "error", "method", "channel", "symbol"})
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                    st.text(max_size=10), st.sampled_from(["trade", "ticker", "aggTrade",
                                                           "BTCUSDT", "BTC/USD", "61800.5"]))
ARBITRARY_JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), children, max_size=6),
    max_leaves=25)


@settings(FUZZ, max_examples=250)
@given(payload=ARBITRARY_JSON)
def test_arbitrary_json_is_parsed_or_refused_by_every_parser(payload):
    for parse, _ in FRAMES.values():
        _outcome(parse, json.dumps(payload))
    for parse, _ in REST.values():
        _outcome(parse, payload)


@settings(FUZZ, max_examples=200)
@given(raw=st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_arbitrary_text_and_bytes_frames_are_parsed_or_refused(raw):
    for parse, _ in FRAMES.values():
        _outcome(parse, raw)


@FUZZ
@given(body=st.one_of(st.binary(max_size=60), ARBITRARY_JSON.map(lambda p: json.dumps(p).encode()),
                      st.sampled_from([b"[" * 100_000, b'{"msg":' + b"[" * 5_000,
                                       b'{"error":' + b"[" * 900 + b"]" * 900 + b"}"])))
def test_an_error_answer_of_any_body_gives_one_short_message(body):
    """providers._net.http reads a venue's error text from any body without raising."""
    text = _message(Response(400, {}, body))
    assert isinstance(text, str)
    assert len(text) <= 300


@FUZZ
@given(values=st.lists(st.text(max_size=24) | st.sampled_from(
    ["nan", "inf", "-inf", "1e400", "-5", " 12 ", "9" * 5000, "Wed, 21 Oct 2015 07:28:00 GMT"]),
    min_size=1, max_size=8))
def test_rate_limit_headers_of_any_value_give_a_bounded_wait_or_a_clear_error(values):
    """providers._net.limits reads Binance's used-weight and every venue's Retry-After header:
    any value gives a finite wait within max_wait, or RateLimited (a VenueError) saying why."""

    async def main() -> None:
        limiter = RateLimiter("binance", weight_limit=6000, weight_header="X-MBX-USED-WEIGHT-1M",
                              max_wait=300.0)
        for value in values:
            headers = {"x-mbx-used-weight-1m": value, "retry-after": value}
            assert limiter.observe(200, headers) is None
            try:
                wait = limiter.observe(429, headers)
            except RateLimited as exc:
                refused = str(exc)
            else:
                assert wait is not None
                assert 0 <= wait <= 300.0
                continue
            assert "longer than max_retry_wait=300 s" in refused

    with logging_disabled():
        trio.run(main)


# -- the values refused, one by one -------------------------------------------------------------

def _binance_trade(**data: Any) -> str:
    return json.dumps({"stream": "btcusdt@trade",
                       "data": {**BINANCE_FRAMES["trade"]["data"], **data}})


@pytest.mark.parametrize(("frame", "reason"), [
    (_binance_trade(T=10**400), "field 'T' is not an integer in 0..2\\*\\*63-1: an integer of 401"),
    (_binance_trade(t=10**400), "field 't' is not an integer"),
    (_binance_trade(p=10**400), "field 'p' is not a number: an integer of 401 digits"),
    (_binance_trade(q="NaN"), "field 'q' is out of range: 'NaN' is not a finite number"),
    (_binance_trade(q=math.inf), "field 'q' is out of range: inf is not a finite number"),
    (_binance_trade(p="-61837.63"), "field 'p' is out of range: '-61837.63' is not a positive"),
    (_binance_trade(p="1e13"), "field 'p' is out of range: '1e13' is not a plausible price"),
    (_binance_trade(T=99_999_999_999_999), "field 'T' is not a plausible time: 99999999999999 is "
                                           "5138-11-16"),
    (json.dumps({"stream": "btcusdt@bookTicker", "data": {
        **BINANCE_FRAMES["bookTicker"]["data"], "b": "61837.65"}}),
     "bookTicker is crossed: bid 61837.65 is not below ask 61837.64"),
    (json.dumps({"stream": "btcusdt@bookTicker", "data": {
        **BINANCE_FRAMES["bookTicker"]["data"], "a": "-1"}}),
     "field 'a' is out of range: '-1' is not a positive price"),
    ("[" * 100_000, "not JSON \\(RecursionError"),
    (json.dumps({"stream": "btcusdt@trade", "data": {
        **BINANCE_FRAMES["trade"]["data"], "p": DEEP}}).replace(json.dumps(DEEP), "[" * 900
                                                                 + "]" * 900),
     "field 'p' is not a number: a JSON array"),
])
def test_binance_refuses_each_implausible_value_saying_which(frame, reason):
    with pytest.raises(MalformedFrame, match=reason) as err:
        bn.parse_frame(frame)
    assert err.value.channel in (None, "trade", "bookTicker")


@pytest.mark.parametrize(("row", "reason"), [
    ({"bid": math.nan}, "field 'bid' is out of range: nan is not a finite number"),
    ({"ask_qty": -1}, "field 'ask_qty' is out of range: -1 is negative"),
    ({"volume": math.nan}, "field 'volume' is out of range: nan"),
    ({"bid": 61900.0}, "ticker is crossed: bid 61900.0 is not below ask 61800.1"),
    ({"timestamp": "9999-12-31T23:59:59Z"}, "field 'timestamp' is not a plausible time"),
    ({"timestamp": "2024-13-45T99:99:99Z"}, "timestamp is not RFC 3339"),
])
def test_kraken_refuses_each_implausible_value_saying_which(row, reason):
    frame = copy.deepcopy(KRAKEN_FRAMES["ticker"])
    frame["data"][0].update(row)
    with pytest.raises(MalformedFrame, match=reason) as err:
        kr.parse_frame(json.dumps(frame))
    assert err.value.channel == "ticker"


@pytest.mark.parametrize(("column", "value", "reason"), [
    (2, "61700.00", "kline row 0: high 61700 is below low 61790"),
    (4, "61900.00", "kline row 0: close 61900 is outside low..high 61790..61850"),
    (5, "NaN", "kline row 0: volume nan is not a finite number"),
    (1, "-1", "kline row 0: open -1 is not a positive price"),
    (0, 10**400, "field 0 is not an integer"),
])
def test_rest_history_refuses_implausible_bars(column, value, reason):
    row = list(KLINE)
    row[column] = value
    with pytest.raises(MalformedFrame, match=reason):
        bn.parse_klines([row], "btcusdt", None)
    ohlc = [list(OHLC_ROW), list(OHLC_ROW)]
    ohlc[0][{0: 0, 1: 1, 2: 2, 4: 4, 5: 6}[column]] = value
    with pytest.raises(MalformedFrame, match=reason.replace("kline", "OHLC")
                       if column else "field 0 is not an integer"):
        kr.parse_ohlc({"XXBTZUSD": ohlc, "last": 0}, "btcusd")
