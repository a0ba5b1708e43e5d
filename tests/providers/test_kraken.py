"""The Kraken provider against a local venue speaking Kraken's documented websocket v2 and REST
formats: streaming, heartbeats, drops, stalls and refused subscriptions with gap replay,
malformed frames, rate limits, unknown symbols, history, symbols, and check-provider."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

import providers.kraken as kraken
from engine.check_provider import check_provider
from engine.clock import LiveClock
from engine.dtypes import ohlc_dtype
from engine.feed import open_feed
from engine.provider import load_provider
from engine.quotes import validate_quote
from engine.shm import ShmArray
from providers._net import Book, Control, MalformedFrame, Trade, UnknownSymbol
from providers.kraken._parse import parse_frame, v2_name
from tests.providers.fake_venues import (
    T0,
    FakeKraken,
    HttpReply,
    Session,
    assert_each_print_once,
    collect,
)

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["xbtusd", "ETH/USD"]  # Kraken's old and new spellings, echoed as requested
VENUE = {"xbtusd": "BTC/USD", "ETH/USD": "ETH/USD"}


@pytest.fixture
def clock():
    # Virtual time jumps only after 5 ms of real idleness, so loopback I/O always lands first.
    return trio.testing.MockClock(autojump_threshold=0.005)


@pytest.fixture(autouse=True)
def _fresh_provider():
    kraken.reset()
    yield
    kraken.reset()


def _configure(rest: str, ws: str, **options) -> None:
    options = {"reconnect_min": 1.0, "reconnect_max": 4.0, "jitter_seed": 3,
               "request_rate": 50.0, **options}
    kraken.configure(rest_url=rest, ws_url=ws + "/v2", **options)


def _statuses(msgs: list[dict]) -> list[str]:
    return [m["feed_status"] for m in msgs if "feed_status" in m]


def _all_trades_in(fake: FakeKraken):
    ends = {name: fake.market.prints[VENUE[name]][-1].tid for name in SYMBOLS}

    def stop(msgs: list[dict]) -> bool:
        seen = {(m["symbol"], t["trade_id"]) for m in msgs for t in m.get("ticks", [])
                if t["type"] == "trade"}
        return all((name, end) in seen for name, end in ends.items())
    return stop


def _baseline(fake: FakeKraken, venue_symbol: str) -> int | None:
    done = fake.market.published_prints(venue_symbol)
    return done[-1].tid if done else None


# -- parsing --------------------------------------------------------------------------------------

def test_frames_parse_as_kraken_documents_them():
    trade = parse_frame(json.dumps({"channel": "trade", "type": "update", "data": [
        {"symbol": "BTC/USD", "side": "sell", "price": 26480.1, "qty": 0.00119, "ord_type":
         "market", "trade_id": 61044952, "timestamp": "2023-09-25T07:49:37.708706Z"},
        {"symbol": "BTC/USD", "side": "buy", "price": 26480.2, "qty": 0.5, "ord_type": "limit",
         "trade_id": 61044953, "timestamp": "2023-09-25T07:49:37.708706123Z"}]}))
    assert trade == [("BTC/USD", Trade(61044952, 61044952, 26480.1, 0.00119,
                                       1695628177.708706, "sell")),
                     ("BTC/USD", Trade(61044953, 61044953, 26480.2, 0.5, 1695628177.708706123,
                                       "buy"))]
    [(sym, book)] = parse_frame(json.dumps({"channel": "ticker", "type": "snapshot", "data": [{
        "symbol": "ETH/USD", "bid": 1594.1, "bid_qty": 2.5, "ask": 1594.2, "ask_qty": 0.7,
        "last": 1594.15, "volume": 1234.5, "vwap": 1590.0, "low": 1580.0, "high": 1600.0,
        "change": 3.0, "change_pct": 0.19}]}))
    assert sym == "ETH/USD"
    assert book == Book(1594.1, 2.5, 1594.2, 0.7, last=1594.15,
                        extra={"volume_24h": 1234.5, "vwap_24h": 1590.0})
    assert parse_frame('{"channel":"heartbeat"}') == [Control("heartbeat")]
    assert parse_frame(json.dumps({"channel": "status", "type": "update", "data": [{
        "api_version": "v2", "connection_id": 1, "system": "maintenance",
        "version": "2.0.0"}]})) == [Control("status", "system is 'maintenance'")]
    ack = parse_frame(json.dumps({"method": "subscribe", "result": {
        "channel": "trade", "snapshot": False, "symbol": "BTC/USD"}, "success": True,
        "time_in": "2023-09-25T09:04:31.742599Z", "time_out": "2023-09-25T09:04:31.742648Z"}))
    assert ack == [Control("ack", "trade BTC/USD", "BTC/USD")]
    nack = parse_frame(json.dumps({"error": "Currency pair not supported DOGE/BTC",
                                   "method": "subscribe", "success": False,
                                   "symbol": "DOGE/BTC", "req_id": 1}))
    assert nack == [Control("nack", "Currency pair not supported DOGE/BTC", "DOGE/BTC")]
    assert parse_frame('{"channel":"book","type":"update","data":[]}') == \
        [Control("ignore", "book")]


@pytest.mark.parametrize(("frame", "reason"), [
    ("nope", "not JSON"),
    ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
     '"price":-1,"qty":1,"trade_id":5,"timestamp":"2023-09-25T07:49:37Z"}]}',
     "trade field 'price' is out of range"),
    ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
     '"price":1,"qty":1,"trade_id":5,"timestamp":"yesterday"}]}', "not RFC 3339"),
    ('{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",'
     '"price":1,"qty":1,"timestamp":"2023-09-25T07:49:37Z"}]}', "trade has no field 'trade_id'"),
    ('{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":"x"}]}',
     "ticker field 'bid' is not a number"),
    ('{"data":[]}', "no 'channel' and no 'method'"),
])
def test_malformed_frames_say_what_is_wrong(frame, reason):
    with pytest.raises(MalformedFrame, match=reason):
        parse_frame(frame)


def test_v2_names_use_common_asset_codes():
    assert v2_name("XBT/USD") == "BTC/USD"
    assert v2_name("XDG/EUR") == "DOGE/EUR"
    assert v2_name("ETH/USD") == "ETH/USD"


# -- streaming ------------------------------------------------------------------------------------

async def test_streams_trades_and_top_of_book(clock):
    fake = FakeKraken()
    fake.advance(10)  # some trades before the start: the newest is the replay baseline
    base = {name: _baseline(fake, VENUE[name]) for name in SYMBOLS}
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        init, first, msgs, live = await collect(kraken, SYMBOLS, _all_trades_in(fake))
    assert live.is_set()
    assert init["xbtusd"]["venue_symbol"] == "BTC/USD"
    assert init["xbtusd"]["rest_symbol"] == "XBTUSD"
    assert (init["xbtusd"]["tick_size"], init["xbtusd"]["lot_size"]) == (0.1, 1e-8)
    assert (init["ETH/USD"]["min_size"], init["ETH/USD"]["min_notional"]) == (0.002, 0.5)
    for name in SYMBOLS:
        validate_quote(first[name], "kraken", SYMBOLS, require_last=True)
        assert first[name]["bid"] < first[name]["ask"]
        assert first[name]["time"] > T0  # the baseline trade's time
    assert [s["params"] for s in fake.subscriptions] == [
        {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": False},
        {"channel": "ticker", "symbol": ["BTC/USD", "ETH/USD"], "event_trigger": "bbo",
         "snapshot": True}]
    for msg in msgs:
        validate_quote(msg, "kraken", SYMBOLS)
    assert _statuses(msgs) == []
    for name in SYMBOLS:
        assert_each_print_once(fake.market, VENUE[name], msgs, name, after=base[name])
    books = [m for m in msgs if m["ticks"][0]["type"] in ("bid", "ask", "bsize", "asize")]
    assert books
    assert all(m["bid"] < m["ask"] and m["last"] > 0 for m in books)
    assert all("volume_24h" in m for m in books)


async def test_heartbeats_keep_a_quiet_stream_alive(clock):
    fake = FakeKraken(heartbeat=1.0)
    fake.sessions.append(Session(send=6, then="hold"))
    async with fake.running() as (rest, ws):
        _configure(rest, ws, stale_after=3)
        _, _, msgs, _ = await collect(kraken, SYMBOLS, lambda m: True, duration=30)
    assert _statuses(msgs) == []
    assert fake.connections == 1


@pytest.mark.parametrize("then", ["drop", "close"])
async def test_a_dropped_connection_reconnects_and_replays_the_gap_once(clock, then):
    fake = FakeKraken()
    fake.advance(10)
    base = {name: _baseline(fake, VENUE[name]) for name in SYMBOLS}
    fake.sessions.extend([Session(send=60, then=then), Session(skip=50, resend=4)])
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        _, _, msgs, _ = await collect(kraken, SYMBOLS, _all_trades_in(fake))
    assert _statuses(msgs) == ["disconnected", "reconnected", "gap_filled"]
    i_down, i_back, _ = (msgs.index(m) for m in msgs if "feed_status" in m)
    replayed = msgs[i_down + 1: i_back]
    assert replayed
    assert all(m.get("replayed") for m in replayed)
    times = [m["time"] for m in replayed]
    assert times == sorted(times)  # across both symbols, in time order
    since = [r.query["since"] for r in fake.requests if r.path == "/0/public/Trades"
             and "since" in r.query]
    assert since  # the gap came from Trades?since=
    for name in SYMBOLS:
        assert_each_print_once(fake.market, VENUE[name], msgs, name, after=base[name])


async def test_a_stalled_stream_without_heartbeats_goes_stale(clock):
    fake = FakeKraken()
    fake.advance(4)
    base = {name: _baseline(fake, VENUE[name]) for name in SYMBOLS}
    fake.sessions.extend([Session(send=40, then="stall"), Session(skip=30)])
    async with fake.running() as (rest, ws):
        _configure(rest, ws, stale_after=5, close_timeout=1)
        _, _, msgs, _ = await collect(kraken, SYMBOLS, _all_trades_in(fake))
    assert _statuses(msgs) == ["stale", "reconnected", "gap_filled"]
    assert next(m for m in msgs if "feed_status" in m)["reason"] == "no message for 5 s"
    for name in SYMBOLS:
        assert_each_print_once(fake.market, VENUE[name], msgs, name, after=base[name])


async def test_a_refused_subscription_is_retried_and_the_gap_replayed(clock, caplog):
    fake = FakeKraken()
    fake.advance(6)
    base = {name: _baseline(fake, VENUE[name]) for name in SYMBOLS}
    fake.reject_next = 1
    fake.sessions.extend([Session(send=20, then="hold"), Session()])
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        caplog.set_level(logging.ERROR, "providers")
        _, _, msgs, _ = await collect(kraken, SYMBOLS, _all_trades_in(fake))
    assert _statuses(msgs) == ["disconnected", "reconnected", "gap_filled"]
    down = next(m for m in msgs if "feed_status" in m)
    assert down["reason"] == "subscription rejected: Exchange is in maintenance mode"
    assert "kraken: subscription rejected for BTC/USD: Exchange is in maintenance mode" in \
        caplog.text
    for name in SYMBOLS:
        assert_each_print_once(fake.market, VENUE[name], msgs, name, after=base[name])


async def test_feed_bars_have_no_holes_after_a_drop(clock):
    engine_clock = LiveClock(T0)
    fake = FakeKraken(clock=engine_clock)
    fake.sessions.append(Session(send=80, then="drop"))
    events = []
    names = ["btcusd", "ethusd"]
    async with fake.running() as (rest, ws):
        _configure(rest, ws, reconnect_min=6.0, reconnect_max=6.0)
        async with open_feed(load_provider("providers.kraken"), names, timeframe=1, history=0,
                             clock=engine_clock, tick_rows=1 << 14, history_rows=16,
                             live_bars=4096) as feed:
            feed.subscribe(lambda quotes, closed, evs: events.extend(evs))
            await fake.all_sent.wait()
            await trio.sleep(2.5)
            bars = {s: feed.bars[s].array.copy() for s in names}
            late = feed.sampler.late_ticks
    assert [e.status for e in events] == ["disconnected", "reconnected", "gap_filled"]
    assert late == 0
    for name, vsym in zip(names, ("BTC/USD", "ETH/USD"), strict=True):
        prints = fake.market.prints[vsym]
        seconds = {}
        for p in prints:
            seconds.setdefault(p.ms // 1000, []).append(p)
        rows = bars[name]
        rows = rows[rows["time"] <= max(seconds)]
        assert rows["time"].tolist() == list(range(min(seconds), max(seconds) + 1))
        for row in rows:
            ps = seconds[int(row["time"])]
            assert (row["open"], row["close"]) == (ps[0].price, ps[-1].price)
            assert row["volume"] == pytest.approx(sum(p.qty for p in ps), rel=1e-9)
            assert row["count"] == len(ps)  # Kraken replays single prints, not aggregates


async def test_malformed_frames_are_reported_and_skipped(clock, caplog):
    fake = FakeKraken()
    fake.sessions.append(Session(inject={3: ["{oops", json.dumps({
        "channel": "trade", "type": "update", "data": [{"symbol": "ETH/USD", "side": "buy",
                                                         "price": 1, "qty": "many",
                                                         "trade_id": 1,
                                                         "timestamp": "2024-08-08T23:55:00Z"}]})]}))
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        caplog.set_level(logging.WARNING, "providers")
        _, _, msgs, _ = await collect(kraken, SYMBOLS, _all_trades_in(fake))
    lines = [r.getMessage() for r in caplog.records if "malformed frame" in r.getMessage()]
    assert lines[0].startswith("kraken: malformed frame: not JSON")
    assert lines[1].startswith("kraken: malformed frame on channel trade for ETH/USD: trade "
                               "field 'qty' is not a number: 'many' (skipped; 2 so far)")
    assert _statuses(msgs) == []
    for name in SYMBOLS:
        assert_each_print_once(fake.market, VENUE[name], msgs, name)


async def test_unknown_symbols_fail_before_streaming_with_close_matches(clock):
    fake = FakeKraken()
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        with pytest.raises(UnknownSymbol, match=r"kraken has no symbol 'btceur'; close "
                                                r"matches: btcusd"):
            await collect(kraken, ["btceur"], lambda m: True)
    assert fake.connections == 0


# -- rate limits ----------------------------------------------------------------------------------

async def test_too_many_requests_in_the_body_waits_and_retries(clock, caplog):
    fake = FakeKraken()
    fake.fail("/0/public/OHLC", HttpReply(200, {"error": ["EGeneral:Too many requests"]}),
              times=2)
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        caplog.set_level(logging.WARNING, "providers")
        with ShmArray.create(ohlc_dtype, 2000) as shm:
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                await nursery.start(kraken.backfill_bars, "btcusd", shm, 1)
            took = trio.current_time() - t0
            n = len(shm)
    assert n == 719
    assert took == pytest.approx(2.0 + 4.0, abs=0.2)  # backing off 2 s, then 4 s
    assert "kraken said 'EGeneral:Too many requests'; waiting 2.0 s" in caplog.text


async def test_requests_are_paced_to_the_configured_rate(clock):
    fake = FakeKraken()
    async with fake.running() as (rest, ws):
        _configure(rest, ws, request_rate=1.0)
        t0 = trio.current_time()
        await collect(kraken, SYMBOLS, lambda m: True)
        took = trio.current_time() - t0
    # AssetPairs, Ticker and two Trades: a burst of three, then one a second.
    assert [r.path for r in fake.requests] == ["/0/public/AssetPairs", "/0/public/Ticker",
                                               "/0/public/Trades", "/0/public/Trades"]
    assert took == pytest.approx(1.0, abs=0.05)


# -- history, symbols, options --------------------------------------------------------------------

async def test_backfill_is_one_frame_of_closed_bars_within_bounds(clock):
    fake = FakeKraken()
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        with ShmArray.create(ohlc_dtype, 4000) as shm:
            async with trio.open_nursery() as nursery:
                await nursery.start(kraken.backfill_bars, "XBT/USD", shm, 10)
            rows = shm.array.copy()
        with ShmArray.create(ohlc_dtype, 32, start=16) as small:
            async with trio.open_nursery() as nursery:
                await nursery.start(kraken.backfill_bars, "btcusd", small, 10)
            small_rows = small.array.copy()
    assert len(rows) == 719  # Kraken keeps 720 bars; the newest is not committed yet
    assert np.all(np.diff(rows["time"]) == 60)
    assert rows["time"][-1] == T0 - 60
    assert np.all((rows["bar_wap"] >= rows["low"]) & (rows["bar_wap"] <= rows["high"]))
    ohlc = [r.query for r in fake.requests if r.path == "/0/public/OHLC"]
    assert len(ohlc) == 2  # one per call: Kraken cannot page further back
    assert ohlc[0] == {"pair": "XBTUSD", "interval": "1"}
    assert len(small_rows) == 32  # the newest 16 pushed, the 16 before them prepended
    assert np.all(np.diff(small_rows["time"]) == 60)
    assert small_rows["time"][-1] == T0 - 60


async def test_symbols_resolve_every_kraken_spelling(clock):
    fake = FakeKraken()
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        await kraken._provider.instruments()
        infos = [kraken.symbol_info(s) for s in ("btcusd", "xbtusd", "BTC/USD", "XBT/USD",
                                                 "XXBTZUSD")]
        assert kraken.search_symbols("") == ["btcusd", "ethusd", "dogeusd"]
        assert kraken.search_symbols("xbt") == ["btcusd"]
        assert kraken.search_symbols("doge") == ["dogeusd"]
    assert {i["venue_symbol"] for i in infos} == {"BTC/USD"}
    assert [i["symbol"] for i in infos] == ["btcusd", "xbtusd", "BTC/USD", "XBT/USD",
                                            "XXBTZUSD"]
    assert (infos[0]["base"], infos[0]["quote"], infos[0]["wsname"]) == ("BTC", "USD",
                                                                         "XBT/USD")


def test_options_are_validated_and_endpoints_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ENGINE_KRAKEN_WS_URL", "ws://127.0.0.1:9/v2")
    opts = kraken.configure()
    assert opts["ws_url"] == "ws://127.0.0.1:9/v2"
    assert opts["rest_url"] == "https://api.kraken.com"
    assert opts["stale_after"] == 10.0
    with pytest.raises(ValueError, match="option bar_interval: expected one of 1, 5, 15"):
        kraken.configure(bar_interval="10080")
    monkeypatch.setenv("ENGINE_KRAKEN_REST_URL", "ftp://nope")
    with pytest.raises(ValueError, match="environment variable ENGINE_KRAKEN_REST_URL"):
        kraken.configure()


# -- check-provider and the CLI -------------------------------------------------------------------

async def test_check_provider_passes_against_the_local_venue(clock):
    fake = FakeKraken()
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        report = await check_provider(load_provider("providers.kraken"), ["btcusd", "ethusd"])
    print(report.format())
    assert report.ok, report.format()


async def test_cli_check_provider_against_the_local_venue():
    fake = FakeKraken()
    async with fake.running() as (rest, ws):
        with trio.fail_after(120):
            out = await trio.run_process(
                [sys.executable, "-m", "engine.cli", "check-provider", "providers.kraken",
                 "-o", f"rest_url={rest}", "-o", f"ws_url={ws}/v2", "-o", "request_rate=20",
                 "--timeout", "10"], cwd=ROOT, capture_stdout=True, capture_stderr=True,
                check=False)
            table = await trio.run_process(
                [sys.executable, "-m", "engine.cli", "symbols", "kraken", "xbt", "-o",
                 f"rest_url={rest}"], cwd=ROOT, capture_stdout=True, capture_stderr=True,
                check=False)
    text = out.stdout.decode()
    print(text)
    assert out.returncode == 0, text + out.stderr.decode()
    assert "12/12 rules pass: providers.kraken conforms" in text
    lines = table.stdout.decode().splitlines()
    assert table.returncode == 0, table.stderr
    assert lines[1].split() == ["btcusd", "BTC", "USD", "0.1", "0.00000001", "0.0001", "0.5",
                                "online"]


def test_cli_symbols_reports_an_unreachable_venue_in_one_line():
    # `engine symbols kraken` without a reachable venue fails in one line (no network used:
    # the REST URL points at a closed local port).
    out = subprocess.run([sys.executable, "-m", "engine.cli", "symbols", "kraken", "-o",
                          "rest_url=http://127.0.0.1:9"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("engine symbols: error: kraken: cannot reach "
                                 "http://127.0.0.1:9")
    assert "Traceback" not in out.stderr
