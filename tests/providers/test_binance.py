"""The Binance provider against a local venue speaking Binance's documented formats (and the
parser against recorded real frames): streaming, drops and stalls with gap replay, malformed
frames, rate limits, unknown symbols, history, symbols, and check-provider."""

from __future__ import annotations

import gzip
import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

import providers.binance as binance
from engine.check_provider import check_provider
from engine.clock import LiveClock
from engine.dtypes import ohlc_dtype
from engine.feed import open_feed
from engine.provider import load_provider
from engine.quotes import validate_quote
from engine.shm import ShmArray
from providers._net import MalformedFrame, RateLimited, Trade, UnknownSymbol
from providers.binance._parse import parse_frame
from tests.providers.fake_venues import (
    T0,
    FakeBinance,
    HttpReply,
    Session,
    assert_each_print_once,
    collect,
)

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["btcusdt", "ETHUSDT"]  # echoed exactly as requested


@pytest.fixture
def clock():
    # Virtual time jumps only after 5 ms of real idleness, so loopback I/O always lands first.
    return trio.testing.MockClock(autojump_threshold=0.005)


@pytest.fixture(autouse=True)
def _fresh_provider():
    binance.reset()
    yield
    binance.reset()


def _configure(rest: str, ws: str, **options) -> None:
    binance.configure(rest_url=rest, ws_url=ws, reconnect_min=1.0, reconnect_max=4.0,
                      jitter_seed=3, **options)


def _statuses(msgs: list[dict]) -> list[str]:
    return [m["feed_status"] for m in msgs if "feed_status" in m]


def _all_trades_in(fake: FakeBinance):
    total = sum(len(p) for p in fake.market.prints.values())

    def stop(msgs: list[dict]) -> bool:
        ids = {(m["symbol"], t["trade_id"]) for m in msgs for t in m.get("ticks", [])
               if t["type"] == "trade"}
        last = {m: max((i for s, i in ids if s == m), default=None) for m in SYMBOLS}
        ends = {"btcusdt": fake.market.prints["BTCUSDT"][-1].tid,
                "ETHUSDT": fake.market.prints["ETHUSDT"][-1].tid}
        return total > 0 and all(last[m] == ends[m] for m in SYMBOLS)
    return stop


# -- recorded frames ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["btcusdt_20240808.gz", "ethusdt_20240808.gz"])
def test_recorded_frames_parse_into_valid_quotes(shared_data, name):
    """Every real trade and bookTicker frame parses; depth frames are recognized and skipped
    (the provider streams top of book, not the full depth book)."""
    path = shared_data / "binance" / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    counts = {"trade": 0, "book": 0, "depth": 0}
    last_tid = None
    with gzip.open(path, "rt") as fh:
        for line in fh:
            _, _, frame = line.partition(" ")
            raw = json.loads(frame)
            events = parse_frame(frame)
            stream = raw.get("stream", "depth snapshot")
            if "depth" in stream:
                assert events == []
                counts["depth"] += 1
                continue
            [(sym, item)] = events
            assert sym == raw["data"]["s"]
            if stream.endswith("@trade"):
                d = raw["data"]
                assert isinstance(item, Trade)
                assert (item.first_id, item.price, item.size) == (d["t"], float(d["p"]),
                                                                   float(d["q"]))
                assert item.time == d["T"] / 1000
                assert item.side == ("sell" if d["m"] else "buy")
                assert last_tid is None or item.first_id > last_tid
                last_tid = item.first_id
                counts["trade"] += 1
            else:
                assert item.bid == float(raw["data"]["b"])
                assert item.seq == raw["data"]["u"]
                counts["book"] += 1
    # 3451 depth updates and one REST depth snapshot the recorder took at the start.
    expected = {"btcusdt_20240808.gz": {"trade": 9757, "book": 28040, "depth": 3452}}
    if name in expected:
        assert counts == expected[name]
    assert counts["trade"] > 1000
    assert counts["book"] > 1000


def test_malformed_frames_say_what_is_wrong():
    bad = {
        "not json": "not JSON",
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"abc",'
        '"q":"1","T":1}}': "field 'p' is not a number: 'abc'",
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1",'
        '"q":"-2","T":1}}': "field 'q' is out of range",
        '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":"x","p":"1",'
        '"q":"1","T":1}}': r"field 't' is not an integer in 0\.\.2\*\*63-1: 'x'",
        '{"data":{"e":"mystery","s":"BTCUSDT"},"stream":"x"}': "unknown event type 'mystery'",
        "[1, 2]": "expected a JSON object",
    }
    for frame, reason in bad.items():
        with pytest.raises(MalformedFrame, match=reason):
            parse_frame(frame)


# -- streaming ------------------------------------------------------------------------------------

async def test_streams_trades_and_top_of_book_with_exchange_times(clock):
    fake = FakeBinance()
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        init, first, msgs, live = await collect(binance, SYMBOLS, _all_trades_in(fake))
    assert live.is_set()
    assert set(init) == set(first) == set(SYMBOLS)
    assert init["btcusdt"]["tick_size"] == 0.01
    assert init["btcusdt"]["lot_size"] == 0.00001
    assert init["ETHUSDT"]["min_notional"] == 5.0
    assert init["ETHUSDT"]["venue_symbol"] == "ETHUSDT"
    for sym in SYMBOLS:
        validate_quote(first[sym], "binance", SYMBOLS, require_last=True)
        assert first[sym]["bid"] < first[sym]["ask"]
    assert fake.subscriptions[0] == {"method": "SUBSCRIBE", "id": 1, "params": [
        "btcusdt@trade", "btcusdt@bookTicker", "ethusdt@trade", "ethusdt@bookTicker"]}
    for msg in msgs:
        validate_quote(msg, "binance", SYMBOLS)
    assert _statuses(msgs) == []
    for sym, vsym in zip(SYMBOLS, ("BTCUSDT", "ETHUSDT"), strict=True):
        ticks = assert_each_print_once(fake.market, vsym, msgs, sym)
        p = fake.market.prints[vsym][0]
        assert ticks[0][2] == {"type": "trade", "price": p.price, "size": p.qty,
                               "time": p.ms / 1000, "trade_id": p.tid,
                               "side": "sell" if p.maker else "buy"}
    books = [m for m in msgs if m["ticks"][0]["type"] in ("bid", "ask", "bsize", "asize")]
    assert books
    assert all("time" not in m for m in books)
    assert all(m["bid"] < m["ask"] and "last" in m for m in books)


async def test_aggregate_trade_stream_mode(clock):
    fake = FakeBinance()
    fake.sessions.extend([Session(send=90, then="drop"), Session(skip=50)])
    async with fake.running() as (rest, ws):
        _configure(rest, ws, trade_stream="aggTrade")
        _, _, msgs, _ = await collect(binance, SYMBOLS, _all_trades_in(fake))
    assert fake.subscriptions[0]["params"][0] == "btcusdt@aggTrade"
    assert _statuses(msgs) == ["disconnected", "reconnected", "gap_filled"]
    for sym, vsym in zip(SYMBOLS, ("BTCUSDT", "ETHUSDT"), strict=True):
        ticks = assert_each_print_once(fake.market, vsym, msgs, sym)
        assert any(t.get("trades", 1) > 1 for _, _, t, _ in ticks)


@pytest.mark.parametrize("then", ["drop", "close"])
async def test_a_dropped_connection_reconnects_and_replays_the_gap_once(clock, then, caplog):
    fake = FakeBinance()
    # Drop after 70 events; 45 happen while away; the venue resends 6 old ones on return.
    fake.sessions.extend([Session(send=70, then=then), Session(skip=45, resend=6)])
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        caplog.set_level(logging.INFO, "providers")
        _, _, msgs, _ = await collect(binance, SYMBOLS, _all_trades_in(fake))
    assert fake.connections == 2
    assert _statuses(msgs) == ["disconnected", "reconnected", "gap_filled"]
    down = next(m for m in msgs if m.get("feed_status") == "disconnected")
    assert down["symbols"] == SYMBOLS
    assert ("1006" if then == "drop" else "1001 GOING_AWAY") in down["reason"]
    i_down, i_back, i_filled = (msgs.index(m) for m in msgs if "feed_status" in m)
    replayed = [m for m in msgs if m.get("replayed")]
    assert replayed, "the gap was not replayed"
    # Replayed trades come after the drop, before "reconnected", and nothing else does.
    assert all(i_down < msgs.index(m) < i_back for m in replayed)
    assert all(m.get("replayed") for m in msgs[i_down + 1: i_back])
    assert i_filled == i_back + 1
    assert "missed trades replayed" in msgs[i_back]["reason"]
    for sym, vsym in zip(SYMBOLS, ("BTCUSDT", "ETHUSDT"), strict=True):
        assert_each_print_once(fake.market, vsym, msgs, sym)
    # The replay came from aggTrades, from the last trade's time (the live stream gives no
    # aggregate ids), then by id.
    agg = [r.query for r in fake.requests if r.path == "/api/v3/aggTrades" and "limit" in r.query
           and r.query["limit"] == "1000"]
    assert any("startTime" in q for q in agg)
    assert "reconnecting in" in caplog.text


async def test_feed_bars_have_no_holes_after_a_drop(clock):
    """Through the engine's feed, on a venue paced by the engine clock: the drop holds the
    bars, the replay fills the seconds missed, every one-second bar has its real trades."""
    engine_clock = LiveClock(T0)
    fake = FakeBinance(clock=engine_clock)
    fake.sessions.extend([Session(send=70, then="drop")])
    events = []
    async with fake.running() as (rest, ws):
        # 3..6 s between attempts: long enough that the clock would close bars flat meanwhile.
        binance.configure(rest_url=rest, ws_url=ws, reconnect_min=6.0, reconnect_max=6.0,
                          jitter_seed=5)
        async with open_feed(load_provider("providers.binance"), SYMBOLS, timeframe=1,
                             history=0, clock=engine_clock, tick_rows=1 << 14, history_rows=16,
                             live_bars=4096) as feed:
            feed.subscribe(lambda quotes, closed, evs: events.extend(evs))
            await fake.all_sent.wait()
            await trio.sleep(2.5)  # the clock closes the last bar
            bars = {s: feed.bars[s].array.copy() for s in SYMBOLS}
            late = feed.sampler.late_ticks
    assert [e.status for e in events] == ["disconnected", "reconnected", "gap_filled"]
    assert late == 0
    for sym, vsym in zip(SYMBOLS, ("BTCUSDT", "ETHUSDT"), strict=True):
        rows = bars[sym]
        prints = fake.market.prints[vsym]
        seconds = {}
        for p in prints:
            seconds.setdefault(p.ms // 1000, []).append(p)
        first, last = min(seconds), max(seconds)
        # After the last trade the clock closes flat bars at the last price.
        tail = rows[rows["time"] > last]
        assert np.all(tail["volume"] == 0)
        assert np.all(tail["close"] == prints[-1].price)
        rows = rows[rows["time"] <= last]
        assert rows["time"].tolist() == list(range(first, last + 1)), f"{sym}: hole in bars"
        for row in rows:
            ps = seconds[int(row["time"])]
            assert (row["open"], row["close"]) == (ps[0].price, ps[-1].price)
            assert row["high"] == max(p.price for p in ps)
            assert row["low"] == min(p.price for p in ps)
            assert row["volume"] == pytest.approx(sum(p.qty for p in ps), rel=1e-9)


async def test_a_stalled_stream_goes_stale_reconnects_and_replays(clock):
    fake = FakeBinance()
    fake.sessions.extend([Session(send=60, then="stall"), Session(skip=30)])
    async with fake.running() as (rest, ws):
        _configure(rest, ws, stale_after=8, close_timeout=1)
        t0 = trio.current_time()
        stalled_at = []

        def stop(msgs):
            if msgs and "feed_status" in msgs[-1] and not stalled_at:
                stalled_at.append(trio.current_time() - t0)
            return _all_trades_in(fake)(msgs)

        _, _, msgs, _ = await collect(binance, SYMBOLS, stop)
    assert _statuses(msgs) == ["stale", "reconnected", "gap_filled"]
    stale = next(m for m in msgs if m.get("feed_status") == "stale")
    assert stale["reason"] == "no message for 8 s"
    assert stalled_at[0] == pytest.approx(8.0, abs=0.05)
    for sym, vsym in zip(SYMBOLS, ("BTCUSDT", "ETHUSDT"), strict=True):
        assert_each_print_once(fake.market, vsym, msgs, sym)


async def test_malformed_frames_are_reported_and_skipped(clock, caplog):
    bad = [
        "{not json",
        json.dumps({"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT",
                    "t": 1, "p": "NaN", "q": "0.1", "T": 1, "m": True, "M": True}}),
        json.dumps({"stream": "ethusdt@bookTicker", "data": {"u": 5, "s": "ETHUSDT",
                    "b": "x", "B": "1", "a": "2", "A": "1"}}),
        json.dumps({"stream": "dogeusdt@trade", "data": {"e": "trade", "E": 1, "s": "DOGEUSDT",
                    "t": 1, "p": "0.1", "q": "5", "T": 1, "m": True, "M": True}}),
    ]
    fake = FakeBinance()
    fake.sessions.append(Session(inject={5: bad[:2], 40: bad[2:]}))
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        caplog.set_level(logging.WARNING, "providers")
        _, _, msgs, _ = await collect(binance, SYMBOLS, _all_trades_in(fake))
    lines = [r.getMessage() for r in caplog.records if "malformed frame" in r.getMessage()]
    assert len(lines) == 4
    assert lines[0].startswith("binance: malformed frame: not JSON")
    assert lines[1].startswith("binance: malformed frame on channel trade for btcusdt: trade "
                               "field 'p' is out of range: 'NaN' is not a finite number "
                               "(skipped; 2 so far)")
    assert lines[2].startswith("binance: malformed frame on channel bookTicker for ETHUSDT: "
                               "bookTicker field 'b' is not a number")
    assert "'DOGEUSDT', which is not subscribed" in lines[3]
    # The stream went on: every real print arrived, once, and nothing else did.
    assert _statuses(msgs) == []
    for sym, vsym in zip(SYMBOLS, ("BTCUSDT", "ETHUSDT"), strict=True):
        assert_each_print_once(fake.market, vsym, msgs, sym)


async def test_unknown_symbols_fail_before_streaming_with_close_matches(clock):
    fake = FakeBinance()
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        with pytest.raises(UnknownSymbol, match=r"binance has no symbol 'btcusd'; close "
                                                r"matches: btcusdt"):
            await collect(binance, ["ethusdt", "btcusd"], lambda m: True)
        with pytest.raises(UnknownSymbol, match="LUNABTC.*not trading: status BREAK"):
            await collect(binance, ["LUNABTC"], lambda m: True)
    assert fake.connections == 0  # never got as far as the websocket


# -- rate limits ----------------------------------------------------------------------------------

async def test_backfill_waits_out_429_retry_after(clock, caplog):
    fake = FakeBinance(history_minutes=1500)
    fake.fail("/api/v3/klines", HttpReply(429, {"code": -1003, "msg": "Too many requests."},
                                          [("Retry-After", "7")]))
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        caplog.set_level(logging.WARNING, "providers")
        with ShmArray.create(ohlc_dtype, 4000) as shm:
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                await nursery.start(binance.backfill_bars, "btcusdt", shm, 3)
            took = trio.current_time() - t0
            n = len(shm)
    assert n == 1500
    assert took == pytest.approx(7.0, abs=0.1)
    assert "binance rate-limited us (HTTP 429); waiting 7.0 s" in caplog.text


async def test_a_418_ban_longer_than_max_retry_wait_fails_at_once(clock):
    fake = FakeBinance()
    fake.fail("/api/v3/klines", HttpReply(418, {"code": -1003, "msg": "Way too much request "
                                                "weight used; IP banned until 1723165000000."},
                                          [("Retry-After", "3600")]))
    async with fake.running() as (rest, ws):
        _configure(rest, ws, max_retry_wait=600)
        with ShmArray.create(ohlc_dtype, 4000) as shm:
            t0 = trio.current_time()
            with pytest.raises(RateLimited, match=r"banned this IP \(HTTP 418\) and asks to wait "
                                                  r"3600 s, longer than max_retry_wait=600 s"):
                async with trio.open_nursery() as nursery:
                    await nursery.start(binance.backfill_bars, "btcusdt", shm, 3)
            assert trio.current_time() - t0 < 1.0


async def test_gap_replay_waits_out_a_429_and_still_has_no_hole(clock):
    fake = FakeBinance()
    fake.sessions.extend([Session(send=50, then="drop"), Session(skip=40)])
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        # The first quotes use two aggTrades calls; the third is the gap replay.
        original = fake.route
        calls = {"n": 0}

        async def route(req):
            if req.path == "/api/v3/aggTrades":
                calls["n"] += 1
                if calls["n"] == 3:
                    return HttpReply(429, {"code": -1003, "msg": "slow down"},
                                     [("Retry-After", "2")])
            return await original(req)

        fake.route = route
        _, _, msgs, _ = await collect(binance, SYMBOLS, _all_trades_in(fake))
    assert calls["n"] >= 4
    assert _statuses(msgs) == ["disconnected", "reconnected", "gap_filled"]
    for sym, vsym in zip(SYMBOLS, ("BTCUSDT", "ETHUSDT"), strict=True):
        assert_each_print_once(fake.market, vsym, msgs, sym)


async def test_requests_slow_down_near_the_weight_limit(clock):
    fake = FakeBinance(history_minutes=5000)
    fake.weight = 5390  # this minute's weight, used by someone else on this IP
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        with ShmArray.create(ohlc_dtype, 8000) as shm:
            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                await nursery.start(binance.backfill_bars, "btcusdt", shm, 5)
            took = trio.current_time() - t0
    # exchangeInfo (20) brings it to 5410 > 90 % of 6000: the next request waits the minute.
    assert took == pytest.approx(60.0, abs=0.5)


# -- history --------------------------------------------------------------------------------------

async def test_backfill_pages_back_through_closed_klines_within_bounds(clock):
    fake = FakeBinance(history_minutes=2500)
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        with ShmArray.create(ohlc_dtype, 10_000) as shm:
            async with trio.open_nursery() as nursery:
                scope = await nursery.start(binance.backfill_bars, "BTCUSDT", shm, 10)
            assert isinstance(scope, trio.CancelScope)
            rows = shm.array.copy()
        with ShmArray.create(ohlc_dtype, 32, start=16) as small:
            async with trio.open_nursery() as nursery:
                await nursery.start(binance.backfill_bars, "btcusdt", small, 10)
            small_rows = small.array.copy()
    assert len(rows) == 2500
    # Oldest first, one a minute, up to the last closed minute: the forming one is left out.
    assert np.all(np.diff(rows["time"]) == 60)
    assert rows["time"][-1] == T0 - 60
    assert np.all((rows["bar_wap"] >= rows["low"]) & (rows["bar_wap"] <= rows["high"]))
    assert rows["count"].min() >= 10
    pages = [r.query for r in fake.requests if r.path == "/api/v3/klines"]
    assert [("endTime" in q) for q in pages[:3]] == [False, True, True]
    assert pages[0]["interval"] == "1m"
    assert pages[0]["limit"] == "1000"
    assert len(small_rows) == 32
    assert small_rows["time"][-1] == T0 - 60
    assert np.all(np.diff(small_rows["time"]) == 60)


async def test_feed_history_from_one_minute_klines(clock):
    fake = FakeBinance(history_minutes=300)
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        async with open_feed(load_provider("providers.binance"), ["btcusdt"], timeframe=300,
                             history=1, clock=LiveClock(T0), tick_rows=1 << 12,
                             history_rows=2000, live_bars=100) as feed:
            bars = feed.bars["btcusdt"].array.copy()
    assert len(bars) == 60  # 300 one-minute klines, resampled to 5 minutes
    assert np.all(np.diff(bars["time"]) == 300)
    assert bars["time"][-1] == T0 - 300


# -- symbols and options --------------------------------------------------------------------------

async def test_symbol_info_and_search_come_from_exchange_info(clock):
    fake = FakeBinance()
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        await binance._provider.instruments()  # the sync calls below use the cache
        info = binance.symbol_info("BTC/USDT")
        assert binance.search_symbols("") == ["btcusdt", "ethusdt", "bnbbtc"]
        assert binance.search_symbols("eth") == ["ethusdt"]
        assert binance.search_symbols("*btc") == ["bnbbtc"]
    assert info["symbol"] == "BTC/USDT"
    assert info["venue_symbol"] == "BTCUSDT"
    assert (info["tick_size"], info["lot_size"], info["min_size"], info["min_notional"]) == \
        (0.01, 0.00001, 0.00001, 5.0)
    assert (info["base"], info["quote"], info["status"]) == ("BTC", "USDT", "TRADING")
    assert [r.path for r in fake.requests].count("/api/v3/exchangeInfo") == 1


def test_options_are_validated_and_endpoints_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("ENGINE_BINANCE_REST_URL", "http://127.0.0.1:1234")
    opts = binance.configure()
    assert opts["rest_url"] == "http://127.0.0.1:1234"
    assert opts["ws_url"] == "wss://stream.binance.com:9443"
    assert binance.configure(rest_url="https://api.binance.com/")["rest_url"] == \
        "https://api.binance.com"
    with pytest.raises(ValueError, match="binance has no option colour"):
        binance.configure(colour="red")
    with pytest.raises(ValueError, match="option ws_url: expected a ws/wss URL"):
        binance.configure(ws_url="http://x")
    with pytest.raises(ValueError, match="option stale_after: must be > 0"):
        binance.configure(stale_after="0")
    with pytest.raises(ValueError, match="option trade_stream: expected one of trade, aggTrade"):
        binance.configure(trade_stream="depth")


# -- check-provider and the CLI -------------------------------------------------------------------

async def test_check_provider_passes_against_the_local_venue(clock):
    fake = FakeBinance()
    async with fake.running() as (rest, ws):
        _configure(rest, ws)
        report = await check_provider(load_provider("providers.binance"), SYMBOLS)
    print(report.format())
    assert report.ok, report.format()


async def _cli(*args: str) -> subprocess.CompletedProcess:
    return await trio.run_process([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                                  capture_stdout=True, capture_stderr=True, check=False)


async def test_cli_check_provider_and_symbols_against_the_local_venue():
    """Real subprocesses on the real clock, the fake venue served from this test's loop."""
    fake = FakeBinance()
    async with fake.running() as (rest, ws):
        with trio.fail_after(120):
            check = await _cli("check-provider", "providers.binance", "-o", f"rest_url={rest}",
                               "-o", f"ws_url={ws}", "--timeout", "10")
            table = await _cli("symbols", "binance", "usdt", "-o", f"rest_url={rest}")
            as_json = await _cli("symbols", "binance", "btc", "--json", "-o",
                                 f"rest_url={rest}")
            missing = await _cli("run", str(ROOT / "strategies" / "sma_cross.py"), "--provider",
                                 "binance", "--symbols", "btcusd", "--duration", "5",
                                 "-o", f"rest_url={rest}", "-o", f"ws_url={ws}")
    out = check.stdout.decode()
    print(out)
    assert check.returncode == 0, out + check.stderr.decode()
    assert "12/12 rules pass: providers.binance conforms" in out
    lines = table.stdout.decode().splitlines()
    assert table.returncode == 0, table.stderr
    assert lines[0].split() == ["symbol", "base", "quote", "tick", "lot", "min", "size", "min",
                                "notional", "status"]
    assert [line.split()[0] for line in lines[1:]] == ["btcusdt", "ethusdt"]
    assert lines[1].split()[1:] == ["BTC", "USDT", "0.01", "0.00001", "0.00001", "5",
                                    "TRADING"]
    infos = json.loads(as_json.stdout)
    assert [i["symbol"] for i in infos] == ["btcusdt", "bnbbtc"]
    err = missing.stderr.decode()
    assert missing.returncode == 2
    assert "Traceback" not in err
    assert "binance has no symbol 'btcusd'; close matches: btcusdt" in err


async def test_cli_symbols_reports_an_unreachable_venue_in_one_line():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    out = await _cli("symbols", "binance", "-o", f"rest_url=http://127.0.0.1:{port}",
                     "-o", "request_timeout=2")
    err = out.stderr.decode()
    assert out.returncode == 1
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert err.startswith(f"engine symbols: error: binance: cannot reach http://127.0.0.1:{port}")


def test_first_quote_falls_back_to_the_mid_and_carries_the_last_trade_time():
    from providers._net import Book, SymbolState
    from providers._net.provider import _first_quote

    st = SymbolState("X", "X", ["x"])
    st.book = Book(10.0, 1.0, 12.0, 1.0)
    # No trade yet: 'last' (required in a first quote) is the mid.
    assert _first_quote("binance", "x", st)["last"] == 11.0
    st.set_baseline(Trade(1, 1, 10.5, 1.0, T0 + 0.5))
    quote = _first_quote("binance", "x", st)
    assert (quote["last"], quote["time"], quote["bid"], quote["ask"]) == (10.5, T0 + 0.5, 10.0,
                                                                           12.0)
    assert math.isfinite(quote["bsize"])
