"""The shared network code of the venue providers: backoff, rate limits, the HTTP client, trade
deduplication, book ticks and the reconnect loop, on trio's MockClock and 127.0.0.1 only."""

from __future__ import annotations

import gzip
import json
import logging
import random

import pytest
import trio
import trio.testing

from providers._net import (
    Backoff,
    Book,
    HttpClient,
    HttpStatusError,
    RateLimited,
    RateLimiter,
    RetryAfter,
    SymbolState,
    Trade,
    VenueUnreachable,
)
from providers._net.events import book_msg, trade_msg
from providers._net.instruments import Instrument, InstrumentTable
from providers._net.options import StreamSettings
from providers._net.stream import ResilientStream
from tests.providers.fake_venues import HttpReply, HttpRequest, serve


@pytest.fixture
def clock():
    # Virtual time jumps only after 5 ms of real idleness, so loopback I/O always lands first.
    return trio.testing.MockClock(autojump_threshold=0.005)


# -- backoff --------------------------------------------------------------------------------------

def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets():
    seed = 20240808
    b = Backoff(1.0, 8.0, rng=random.Random(seed))
    delays = [b.next() for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    for d, c in zip(delays, ceilings, strict=True):
        assert c / 2 <= d <= c, f"seed {seed}: {delays}"
    # Seeded: the same draws again; and jittered: not simply the ceilings.
    again = Backoff(1.0, 8.0, rng=random.Random(seed))
    assert [again.next() for _ in range(6)] == delays
    assert delays != [float(c) for c in ceilings]
    b.reset()
    assert 0.5 <= b.next() <= 1.0


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError, match="base"):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError, match="cap"):
        Backoff(2.0, 1.0)


# -- rate limits ----------------------------------------------------------------------------------

async def test_token_bucket_paces_requests_after_a_burst(clock):
    limiter = RateLimiter("venue", rate=2.0, burst=3)
    t0 = trio.current_time()
    times = []
    for _ in range(7):
        await limiter.acquire()
        times.append(trio.current_time() - t0)
    # Three at once, then one every half second.
    assert times[:3] == [0.0, 0.0, 0.0]
    assert times[3:] == pytest.approx([0.5, 1.0, 1.5, 2.0])


async def test_429_blocks_every_request_for_retry_after(clock):
    limiter = RateLimiter("venue")
    assert limiter.observe(429, {"retry-after": "7"}) == 7.0
    t0 = trio.current_time()
    await limiter.acquire()
    assert trio.current_time() - t0 == pytest.approx(7.0)


async def test_418_longer_than_max_wait_raises_instead_of_hanging(clock):
    limiter = RateLimiter("binance", max_wait=300)
    with pytest.raises(RateLimited, match=r"banned this IP \(HTTP 418\).*3600 s"):
        limiter.observe(418, {"retry-after": "3600"})
    # Without Retry-After a ban waits at least the shortest ban Binance hands out (2 minutes).
    assert limiter.observe(418, {}) == 120.0


async def test_weight_budget_waits_for_the_next_minute(clock):
    limiter = RateLimiter("binance", weight_limit=1000, weight_header="X-MBX-USED-WEIGHT-1M",
                          budget=0.9)
    await limiter.acquire(10)
    limiter.observe(200, {"x-mbx-used-weight-1m": "880"})
    t0 = trio.current_time()
    await limiter.acquire(10)  # 890 <= 900: goes at once
    assert trio.current_time() == t0
    limiter.observe(200, {"x-mbx-used-weight-1m": "890"})
    await limiter.acquire(20)  # 910 > 900: waits out the minute that began at t0
    assert trio.current_time() - t0 == pytest.approx(60.0)


# -- the HTTP client ------------------------------------------------------------------------------

async def test_http_client_keeps_one_connection_and_decodes_gzip():
    calls = []

    async def http(req: HttpRequest) -> HttpReply:
        calls.append(req)
        body = gzip.compress(json.dumps({"n": len(calls), "q": req.query}).encode())
        return HttpReply(200, body, [("Content-Encoding", "gzip")])

    async def ws(peer):
        raise AssertionError("no websocket here")

    async with serve(http, ws) as (rest, _):
        async with HttpClient(rest, venue="venue") as client:
            for k in range(3):
                got = await client.get_json("/x", {"a": k})
                assert got == {"n": k + 1, "q": {"a": str(k)}}
            stream = client._conn.stream
            await client.get_json("/y")
            assert client._conn.stream is stream  # kept alive, reused
    assert [c.path for c in calls] == ["/x", "/x", "/x", "/y"]


async def test_http_client_retries_5xx_and_reports_4xx_with_the_venue_message(clock):
    answers = [HttpReply(502, {"msg": "bad gateway"}), HttpReply(200, {"ok": True}),
               HttpReply(400, {"code": -1121, "msg": "Invalid symbol."})]

    async def http(req: HttpRequest) -> HttpReply:
        return answers.pop(0)

    async with serve(http, None) as (rest, _):
        async with HttpClient(rest, venue="binance") as client:
            assert await client.get_json("/a") == {"ok": True}
            with pytest.raises(HttpStatusError, match=r"HTTP 400: Invalid symbol. \(code -1121\)"):
                await client.get_json("/b")


async def test_http_client_waits_out_a_rate_limit_reported_in_the_body(clock):
    answers = [{"error": ["EGeneral:Too many requests"]}, {"error": [], "result": 1}]

    async def http(req: HttpRequest) -> HttpReply:
        return HttpReply(200, answers.pop(0))

    def check(payload):
        if payload.get("error"):
            raise RetryAfter(3.0, payload["error"][0])

    async with serve(http, None) as (rest, _):
        async with HttpClient(rest, venue="kraken") as client:
            t0 = trio.current_time()
            assert await client.get_json("/0/public/Time", check=check) == \
                {"error": [], "result": 1}
            assert trio.current_time() - t0 == pytest.approx(3.0)


async def test_http_client_gives_up_on_an_unreachable_venue_with_one_clear_error(clock):
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there now
    async with HttpClient(f"http://127.0.0.1:{port}", venue="kraken", attempts=3) as client:
        with pytest.raises(VenueUnreachable, match=rf"kraken: cannot reach http://127.0.0.1:"
                                                   rf"{port} \(GET /z\)"):
            await client.get_json("/z")


async def test_http_client_is_cancelled_at_once_while_the_venue_is_silent():
    async def http(req: HttpRequest) -> HttpReply:
        await trio.sleep_forever()

    async with serve(http, None) as (rest, _):
        async with HttpClient(rest, venue="venue", timeout=30) as client:
            with trio.move_on_after(0.2) as scope:
                await client.get_json("/slow")
            assert scope.cancelled_caught
            assert client._conn is None  # the half-used connection was closed, not kept


def test_http_client_rejects_a_bad_base_url():
    with pytest.raises(ValueError, match="must be http"):
        HttpClient("ftp://example.invalid", venue="venue")


# -- deduplication and book ticks -----------------------------------------------------------------

def _state() -> SymbolState:
    return SymbolState("BTCUSDT", "BTCUSDT", ["btcusdt"])


def test_admit_drops_delivered_trades_and_trims_a_straddling_aggregate():
    st = _state()
    for tid, size in ((10, 1.0), (11, 2.0)):
        trade = st.admit(Trade(tid, tid, 100.0, size, 1.0))
        assert trade is not None
        st.commit(trade)
    assert st.admit(Trade(11, 11, 100.0, 2.0, 1.0)) is None  # a duplicate
    assert st.admit(Trade(9, 11, 100.0, 4.0, 1.0)) is None  # an aggregate fully delivered
    # An aggregate of prints 10..13 (1 + 2 + 3 + 4): prints 12 and 13 remain.
    rest = st.admit(Trade(10, 13, 100.0, 10.0, 1.0, cursor=77))
    assert (rest.first_id, rest.last_id, rest.size, rest.cursor) == (12, 13, 7.0, 77)
    st.commit(rest)
    assert st.admit(Trade(14, 14, 100.5, 1.0, 1.1)) is not None


def test_baseline_counts_as_delivered_but_not_as_a_recent_print():
    st = _state()
    st.set_baseline(Trade(40, 42, 99.0, 3.0, 5.0, cursor=7))
    assert (st.last_id, st.last_time, st.cursor, st.last_price) == (42, 5.0, 7, 99.0)
    assert not st.recent
    assert st.admit(Trade(42, 42, 99.0, 1.0, 5.0)) is None


def test_trade_messages_carry_ids_and_the_replay_mark():
    msg = trade_msg("btcusdt", Trade(5, 7, 100.0, 0.5, 1.5, "sell"), replayed=True)
    assert msg == {"symbol": "btcusdt", "last": 100.0, "time": 1.5, "replayed": True,
                   "ticks": [{"type": "trade", "price": 100.0, "size": 0.5, "time": 1.5,
                              "trade_id": 7, "side": "sell", "trades": 3}]}


def test_book_messages_tell_price_moves_from_size_changes():
    a = Book(100.0, 1.0, 101.0, 2.0)
    first = book_msg("x", a, None, 100.5)
    assert [t["type"] for t in first["ticks"]] == ["bid", "ask"]
    assert first["last"] == 100.5
    sized = book_msg("x", Book(100.0, 3.0, 101.0, 2.0), a, None)
    assert sized["ticks"] == [{"type": "bsize", "price": 100.0, "size": 3.0}]
    assert book_msg("x", Book(100.0, 1.0, 101.0, 2.0), a, None) is None


def test_instrument_table_resolves_spellings_and_suggests_close_matches():
    def inst(key, venue, base, quote, trading=True, aliases=()):
        return Instrument(key, venue, venue, base, quote, 0.01, 0.001, 0.001, 5.0,
                          "TRADING" if trading else "BREAK", trading, aliases)

    table = InstrumentTable("binance", [inst("btcusdt", "BTCUSDT", "BTC", "USDT"),
                                        inst("ethusdt", "ETHUSDT", "ETH", "USDT"),
                                        inst("btcusdc", "BTCUSDC", "BTC", "USDC"),
                                        inst("lunabtc", "LUNABTC", "LUNA", "BTC", False)])
    assert table.resolve("BTC/USDT").venue_symbol == "BTCUSDT"
    assert table.search("btc") == ["btcusdt", "btcusdc"]
    assert table.search("*usdc") == ["btcusdc"]
    assert table.search("usdt") == ["btcusdt", "ethusdt"]
    with pytest.raises(KeyError, match=r"no symbol 'btcusd'; close matches: btcusdt, btcusdc"):
        table.resolve("btcusd")
    with pytest.raises(ValueError, match="listed but not trading: status BREAK"):
        table.resolve("lunabtc")


# -- the reconnect loop ---------------------------------------------------------------------------

class _Silent:
    """A venue adapter whose websocket never answers a subscription: every connection goes
    stale. The parts a stream never reaches in this test raise."""

    name = "silent"

    def subscribe_frames(self, states):
        return ['{"subscribe": true}']

    def acks_expected(self, states):
        return 1

    def parse(self, frame):
        return []


async def test_reconnects_with_jittered_backoff_and_reports_the_outage_once(clock, caplog):
    seed = 11
    opened = []

    async def ws(peer):
        opened.append(trio.current_time())
        await peer.recv()
        await trio.sleep_forever()  # subscribed, then silence: stale

    send, recv = trio.open_memory_channel(100)
    async with serve(None, ws) as (_, ws_url):
        settings = StreamSettings(ws_url=ws_url, stale_after=5.0, connect_timeout=5.0,
                                  close_timeout=0.5, reconnect_min=1.0, reconnect_max=4.0,
                                  max_gap=3600.0, jitter_seed=seed)
        stream = ResilientStream(_Silent(), None, [_state()], send, trio.Event(), settings)
        caplog.set_level(logging.WARNING, "providers.net")
        with trio.move_on_after(60):
            await stream.run()
    statuses = []
    while True:
        try:
            statuses.append(recv.receive_nowait())
        except trio.WouldBlock:
            break
    # One "stale" for the whole outage, not one per failed attempt.
    assert statuses == [{"feed_status": "stale", "symbols": ["btcusdt"],
                         "reason": "no message for 5 s"}]
    # Connection k+1 opens stale_after + close wait + a jittered, doubling delay after k.
    rng = Backoff(1.0, 4.0, rng=random.Random(seed))
    gaps = [b - a for a, b in zip(opened, opened[1:], strict=False)]
    assert len(gaps) >= 5
    for gap in gaps[:5]:
        assert gap == pytest.approx(5.0 + 0.5 + rng.next(), abs=1e-6), f"seed {seed}"
    assert "silent: stream stale (no message for 5 s); reconnecting in" in caplog.text
