"""Malformed frames in the middle of a live venue stream (the local fake Binance and Kraken):
each is counted and logged once per kind, in one line naming venue, channel and a short excerpt,
and the stream goes on delivering every following quote. Bad REST answers end a backfill with
one clear error. The malformed-frame log's rate limit runs on trio's clock."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import trio
import trio.testing

import providers.binance as binance
import providers.kraken as kraken
from engine.dtypes import ohlc_dtype
from engine.shm import ShmArray
from providers._net import HttpClient, MalformedFrame, VenueError
from providers._net.malformed import EXCERPT, MAX_KINDS, SUMMARY_EVERY, MalformedLog
from tests.providers.fake_venues import (
    FakeBinance,
    FakeKraken,
    HttpReply,
    Session,
    assert_each_print_once,
    collect,
)


@pytest.fixture
def clock():
    # Virtual time jumps only after 5 ms of real idleness, so loopback I/O always lands first.
    return trio.testing.MockClock(autojump_threshold=0.005)


@pytest.fixture(autouse=True)
def _fresh_providers():
    binance.reset()
    kraken.reset()
    yield
    binance.reset()
    kraken.reset()


def _malformed_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "malformed frame" in r.getMessage()]


def _all_prints(fake, names: dict[str, str]):
    ends = {name: fake.market.prints[vsym][-1].tid for name, vsym in names.items()}

    def stop(msgs: list[dict]) -> bool:
        seen = {(m["symbol"], t["trade_id"]) for m in msgs for t in m.get("ticks", [])
                if t["type"] == "trade"}
        return all((name, end) in seen for name, end in ends.items())
    return stop


def _last_book(msgs: list[dict], name: str) -> tuple[float, float]:
    books = [m for m in msgs if m.get("symbol") == name and "bid" in m and "ask" in m]
    return books[-1]["bid"], books[-1]["ask"]


def _trade(**data) -> str:
    base = {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 1, "p": "61800.5", "q": "0.1",
            "T": 1_723_161_300_000, "m": True, "M": True}
    return json.dumps({"stream": "btcusdt@trade", "data": {**base, **data}})


def _book(**data) -> str:
    base = {"u": 1, "s": "ETHUSDT", "b": "2650.00", "B": "1", "a": "2650.01", "A": "1"}
    return json.dumps({"stream": "ethusdt@bookTicker", "data": {**base, **data}})


async def test_binance_counts_and_logs_bad_frames_once_per_kind_and_streams_on(clock, caplog):
    bad = [
        _trade(T=10**400),  # the audit's 400-digit integer
        "[" * 100_000,  # nesting deeper than the interpreter's stack
        "{not json",  # the same kind as the one before: counted, not logged again
        _trade(q="NaN"), _trade(q="NaN"), _trade(q="NaN"),
        _book(b="2651.00"),  # crossed
        _book(a="-1"),
        '{"stream": "x",\n"data": {"e": "trade"}}',  # a newline must not split the log line
    ]
    fake = FakeBinance()
    fake.sessions.append(Session(inject={40: bad}))
    names = {"btcusdt": "BTCUSDT", "ETHUSDT": "ETHUSDT"}
    async with fake.running() as (rest, ws):
        binance.configure(rest_url=rest, ws_url=ws, reconnect_min=1.0, reconnect_max=4.0,
                          jitter_seed=3)
        caplog.set_level(logging.WARNING, "providers")
        _, _, msgs, _ = await collect(binance, list(names), _all_prints(fake, names))

    lines = _malformed_lines(caplog)
    assert [line.split(": ", 2)[1] for line in lines] == [
        "malformed frame on channel trade for btcusdt",
        "malformed frame",
        "malformed frame on channel trade for btcusdt",
        "malformed frame on channel bookTicker for ETHUSDT",
        "malformed frame on channel bookTicker for ETHUSDT",
        "malformed frame on channel x",
    ]
    assert "field 'T' is not an integer in 0..2**63-1: an integer of 401 digits" in lines[0]
    assert "not JSON (RecursionError" in lines[1]
    assert "field 'q' is out of range: 'NaN' is not a finite number (skipped; 4 so far)" \
        in lines[2]
    assert "bookTicker is crossed: bid 2651.0 is not below ask 2650.01 (skipped; 7 so far)" \
        in lines[3]
    assert "field 'a' is out of range: '-1' is not a positive price" in lines[4]
    assert "(skipped; 9 so far)" in lines[5]
    for line in lines:
        assert "\n" not in line
        assert len(line.rpartition("so far): ")[2]) <= EXCERPT
    # Nothing was mistaken for an outage, and every quote after the bad frames came through.
    assert [m for m in msgs if "feed_status" in m] == []
    for name, vsym in names.items():
        assert_each_print_once(fake.market, vsym, msgs, name)
        last = fake.market.books[vsym][-1]
        assert _last_book(msgs, name) == (last.bid, last.ask)
    assert all(m["bid"] < m["ask"] for m in msgs if "bid" in m and "ask" in m)


async def test_kraken_refuses_an_update_that_crosses_the_book_it_merges_with(clock, caplog):
    """A ticker row with an empty bid and an ask below the book's bid: the parser cannot see
    the crossing (one side), the stream can. It refuses the update and the next one rebuilds
    the book."""
    empty_bid = json.dumps({"channel": "ticker", "type": "update", "data": [{
        "symbol": "ETH/USD", "bid": 0, "bid_qty": 0, "ask": 100.0, "ask_qty": 1.0}]})
    huge = json.dumps({"channel": "trade", "type": "update", "data": [{
        "symbol": "BTC/USD", "side": "buy", "price": 61800.0, "qty": 10**400,
        "trade_id": 1, "timestamp": "2024-08-08T23:55:00Z"}]})
    fake = FakeKraken()
    fake.sessions.append(Session(inject={30: [empty_bid, huge]}))
    names = {"btcusd": "BTC/USD", "ethusd": "ETH/USD"}
    async with fake.running() as (rest, ws):
        kraken.configure(rest_url=rest, ws_url=ws + "/v2", reconnect_min=1.0,
                         reconnect_max=4.0, jitter_seed=3, request_rate=50.0)
        caplog.set_level(logging.WARNING, "providers")
        _, _, msgs, _ = await collect(kraken, list(names), _all_prints(fake, names))

    lines = _malformed_lines(caplog)
    assert len(lines) == 2
    # Parsing refuses the trade as it arrives; the crossing shows when the book is merged.
    assert lines[0].startswith("kraken: malformed frame on channel trade for btcusd: trade "
                               "field 'qty' is not a number: an integer of 401 digits "
                               "(skipped; 1 so far)")
    assert lines[1].startswith("kraken: malformed frame for ethusd: update crosses the book: "
                               "bid ")
    assert lines[1].endswith(" is not below ask 100.0 (the bid kept from an earlier update); "
                             "refused, the book restarts from the next update (skipped; 2 so "
                             "far): update: bid None x None, ask 100.0 x 1.0")
    assert [m for m in msgs if "feed_status" in m] == []
    assert all(m["bid"] < m["ask"] for m in msgs if "bid" in m and "ask" in m)
    assert not any(t.get("price") == 100.0 for m in msgs for t in m.get("ticks", []))
    for name, vsym in names.items():
        assert_each_print_once(fake.market, vsym, msgs, name)
        last = fake.market.books[vsym][-1]
        assert _last_book(msgs, name) == (last.bid, last.ask)


# -- REST answers ---------------------------------------------------------------------------------

async def test_a_backfill_answered_with_an_implausible_kline_fails_in_one_line(clock):
    fake = FakeBinance(history_minutes=10)
    async with fake.running() as (rest, ws):
        binance.configure(rest_url=rest, ws_url=ws)
        row = [1_723_161_240_000, "61800.0", "61700.0", "61790.0", "61750.0", "1.0",
               1_723_161_299_999, "61750.0", 10, "0.5", "30000.0", "0"]
        fake.fail("/api/v3/klines", HttpReply(200, [row]))
        with ShmArray.create(ohlc_dtype, 100) as shm:
            with pytest.raises(VenueError) as err:
                async with trio.open_nursery() as nursery:
                    await nursery.start(binance.backfill_bars, "btcusdt", shm, 1)
            assert len(shm) == 0  # nothing of the bad answer was stored
    assert str(err.value) == ("binance: unexpected klines answer: kline row 0: high 61700 is "
                              "below low 61790")


async def test_a_rest_answer_nested_too_deep_is_a_venue_error_not_a_crash(clock):
    fake = FakeBinance()
    async with fake.running() as (rest, _):
        fake.fail("/api/v3/time", HttpReply(200, b"[" * 100_000 + b"]" * 100_000))
        async with HttpClient(rest, venue="binance") as http:
            with pytest.raises(VenueError, match=r"answered with invalid JSON \(RecursionError"):
                await http.get_json("/api/v3/time")


# -- the log's rate limit -------------------------------------------------------------------------

async def test_the_malformed_log_summarizes_a_kind_at_most_once_a_minute(clock, caplog):
    caplog.set_level(logging.WARNING, "providers")
    book = MalformedLog("binance")

    def bad(kind: str) -> MalformedFrame:
        return MalformedFrame(f"{kind}: 'x'", "BTCUSDT", channel="trade")

    for _ in range(50):
        book.record(bad("trade field 'p' is not a number"), '{"p": "x"}', ["btcusdt"])
    await trio.sleep(SUMMARY_EVERY / 2)
    book.record(bad("trade field 'p' is not a number"), '{"p": "x"}', ["btcusdt"])
    assert len(caplog.records) == 1  # the first in full; the rest only counted
    await trio.sleep(SUMMARY_EVERY / 2)
    book.record(bad("trade field 'p' is not a number"), '{"p": "y"}', ["btcusdt"])
    assert caplog.records[1].getMessage() == (
        "binance: 51 more malformed frames (trade field 'p' is not a number) in the last 60 s, "
        "52 of that kind and 52 in all so far; latest on channel trade for btcusdt: "
        '{"p": "y"}')
    book.record(bad("trade field 'p' is not a number"), "{}", None)
    book.flush()
    assert caplog.records[2].getMessage() == (
        "binance: 1 more malformed frames (trade field 'p' is not a number), 53 of that kind "
        "and 53 in all so far")
    assert book.total == 53


async def test_endless_different_garbage_costs_a_bounded_log(clock, caplog):
    caplog.set_level(logging.WARNING, "providers")
    book = MalformedLog("kraken")
    for i in range(1000):
        book.record(MalformedFrame(f"unknown thing {i}"), f"frame {i}", None)
    assert book.total == 1000
    assert len(book.kinds) == MAX_KINDS + 1
    assert book.kinds["other kinds"].count == 1000 - MAX_KINDS
    # One line per kind seen before the cap, and one for the kinds past it.
    assert len(caplog.records) == MAX_KINDS + 1
    assert np.all([len(r.getMessage()) < 400 for r in caplog.records])
