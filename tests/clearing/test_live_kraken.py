"""The live broker against a loopback Kraken that trades (tests/providers/fake_trading_kraken.py):
each scenario of going live, with every private request's nonce and API-Sign checked as Kraken
documents them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import trio

from engine.clearing.ledger import read_events
from engine.clearing.venue_api import VenueRejected
from engine.clearing.venue_broker import LiveLimits
from engine.clock import LiveClock
from engine.orders import CancelOrder, OrderFilled, OrderRejected, SubmitOrder
from providers._net.keys import ApiKeys, Secret
from tests.clearing.live_kit import KRAKEN, T0
from tests.clearing.live_kit import live as kit_live
from tests.providers.fake_trading import HttpReply
from tests.providers.fake_trading_kraken import API_KEY, SECRET, FakeKrakenTrading
from tests.providers.fake_trading_kraken import txid as fake_txid

BTC = "XXBTZUSD"


def order(side: str = "buy", size: float = 0.01, **kw) -> SubmitOrder:
    return SubmitOrder(symbol="btcusd", side=side, size=size, **kw)


def live(path: Path, venue: FakeKrakenTrading | None = None, **kw):
    return kit_live(KRAKEN, path, venue, **kw)


def placed(venue: FakeKrakenTrading) -> list:
    return KRAKEN.placed(venue)


def body(request) -> dict[str, str]:
    return dict(parse_qsl(request.body))


async def test_round_trip(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        broker.submit(order())
        await broker.wait_until(lambda: broker.fills and not broker.account.open_orders())
        await broker.drain()
        fill = broker.fills[0]
        assert (fill.side, fill.size, fill.price, fill.remaining) == ("buy", 0.01, 61_800.1, 0.0)
        assert fill.fee == pytest.approx(0.01 * 61_800.1 * 0.001)
        assert fill.liquidity == "taker"
        assert broker.position("btcusd") == pytest.approx(0.01)
        assert venue.balances["XXBT"] == pytest.approx(0.01)
        assert broker.account.cash == pytest.approx(venue.balances["ZUSD"])
        kinds = [type(e).__name__ for e in events]
        assert kinds.count("OrderFilled") == 1
        assert "OrderAccepted" in kinds
        # One request, carrying the ledger's id as cl_ord_id, a deadline, Kraken's pair name.
        [sent] = placed(venue)
        assert body(sent)["cl_ord_id"] == broker.venue_id(fill.client_id)
        assert (body(sent)["pair"], body(sent)["ordertype"], body(sent)["volume"]) == \
            ("XBTUSD", "market", "0.01000000")
        assert body(sent)["deadline"].endswith("Z")
        broker.submit(order("sell", 0.01))
        await broker.wait_until(lambda: len(broker.fills) == 2)
        assert broker.position("btcusd") == pytest.approx(0.0)
        assert broker.fills[1].price == 61_800.0
    ledger = [e for _, e in read_events(tmp_path / "live1")]
    assert (ledger[0].venue, ledger[0].currency, ledger[0].cash) == ("kraken", "USD", 10_000.0)
    assert sum(isinstance(e, OrderFilled) for e in ledger) == 2


async def test_partial_fills_and_cancel(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        o = order(size=0.05, order_type="limit", limit_price=61_000.0)
        broker.submit(o)
        await broker.drain()
        assert venue.open_count() == 1
        assert body(placed(venue)[0])["price"] == "61000.0"  # pair_decimals 1
        await venue.trade(BTC, 61_000.0, 0.02)
        await broker.wait_until(lambda: broker.fills)
        assert broker.fills[0].remaining == pytest.approx(0.03)
        assert broker.fills[0].liquidity == "maker"
        await venue.trade(BTC, 60_990.0, 0.01)
        await broker.wait_until(lambda: len(broker.fills) == 2)
        assert broker.fills[1].remaining == pytest.approx(0.02)
        broker.cancel(CancelOrder(client_id=o.client_id))
        await broker.drain()
        assert not broker.account.working(o.client_id)
        assert venue.open_count() == 0
        assert broker.position("btcusd") == pytest.approx(0.03)
        cancelled = [e for e in events if type(e).__name__ == "OrderCancelled"]
        assert cancelled[-1].remaining == pytest.approx(0.02)
        cancels = [r for r in venue.requests if r.path == "/0/private/CancelOrder"]
        assert [body(r)["cl_ord_id"] for r in cancels] == [broker.venue_id(o.client_id)]


async def test_rejections_insufficient_funds_and_asset_pair_rules(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        broke = order(size=1.0)  # 61,800 USD of a 10,000 USD account
        broker.submit(broke)
        await broker.drain()
        assert broker.rejections[-1].reason == "kraken: EOrder:Insufficient funds"
        assert len(placed(venue)) == 1  # the venue said no
        odd = order(size=0.000000015)  # lot_decimals 8
        small = order(size=0.00005)  # ordermin 0.0001
        tick = order(order_type="limit", limit_price=61_000.05)  # tick_size 0.1
        fok = order(order_type="limit", limit_price=61_000.0, tif="FOK")
        for o in (odd, small, tick, fok):
            broker.submit(o)
        await broker.drain()
        reasons = [r.reason for r in broker.rejections[-4:]]
        assert "lot size" in reasons[0]
        assert "minimum of 0.0001" in reasons[1]
        assert "tick size" in reasons[2]
        assert "kraken has no FOK" in reasons[3]
        assert len(placed(venue)) == 1  # refused before any request left
        got = [e.client_id for e in events if isinstance(e, OrderRejected)]
        assert got == [broke.client_id, odd.client_id, small.client_id, tick.client_id,
                       fok.client_id]


async def test_rate_limit_answer_rejects_and_holds_the_next_order(tmp_path):
    async with live(tmp_path) as (venue, broker, _):
        venue.replies.append(("POST", "/0/private/AddOrder",
                              HttpReply(200, {"error": ["EAPI:Rate limit exceeded"]})))
        broker.submit(order())
        await broker.drain()
        assert "rate limit reached (EAPI:Rate limit exceeded)" in broker.rejections[-1].reason
        assert not broker.account.open_orders()
        t = trio.current_time()
        broker.submit(order())
        await broker.wait_until(lambda: broker.fills)
        assert trio.current_time() - t >= 1.9  # backed off before the next order left
        assert len(venue.orders) == 1


async def test_invalid_nonce_is_signed_again_once(tmp_path):
    async with live(tmp_path) as (venue, broker, _):
        venue.replies.append(("POST", "/0/private/AddOrder",
                              HttpReply(200, {"error": ["EAPI:Invalid nonce"]})))
        broker.submit(order())
        await broker.wait_until(lambda: broker.fills)
        first, second = placed(venue)
        assert int(body(second)["nonce"]) > int(body(first)["nonce"])
        assert body(first)["cl_ord_id"] == body(second)["cl_ord_id"]
        assert len(venue.orders) == 1
        assert not broker.rejections


async def test_lost_answer_is_resolved_by_query_without_a_duplicate(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        venue.lose_answers = 1
        o = order(order_type="limit", limit_price=61_000.0)
        broker.submit(o)
        await broker.drain()
        assert len(placed(venue)) == 1  # never sent again
        assert venue.open_count() == 1
        assert broker.account.working(o.client_id)
        # Looked up: by cl_ord_id, or by the txid the executions stream told meanwhile.
        [txid] = [fake_txid(v.order_id) for v in venue.orders.values()]
        lookups = [r for r in venue.requests if body(r).get("cl_ord_id") ==
                   broker.venue_id(o.client_id) and r.path == "/0/private/OpenOrders"
                   or body(r).get("txid") == txid]
        assert lookups
        assert any(type(e).__name__ == "OrderAccepted" for e in events)


async def test_stream_drop_during_a_fill_is_reconciled(tmp_path):
    async with live(tmp_path) as (venue, broker, _):
        o = order(order_type="limit", limit_price=61_000.0)
        broker.submit(o)
        await broker.drain()
        venue.silent = True  # the stream goes quiet, then drops, while the order fills
        await venue.trade(BTC, 61_000.0, 0.01)
        await venue.drop_streams()
        venue.silent = False
        await broker.wait_until(lambda: broker.fills)
        assert broker.fills[0].size == pytest.approx(0.01)
        await broker.wait_until(lambda: not broker.account.working(o.client_id))
        await venue.subscribed.wait()  # resubscribed with a fresh token
        await broker.wait_until(lambda: broker.reconciled >= 3)
        assert len(broker.fills) == 1
        assert len(venue.tokens) >= 2  # a fresh token for the new connection
        assert broker.position("btcusd") == pytest.approx(0.01)


async def test_restart_after_kill_reconciles_fills_made_meanwhile(tmp_path):
    clock = LiveClock(start=T0)
    venue = FakeKrakenTrading(clock)
    async with live(tmp_path, venue, clock=clock) as (_, broker, _events):
        a = order(order_type="limit", limit_price=61_000.0)
        b = order(order_type="limit", limit_price=60_000.0)
        broker.submit(a)
        broker.submit(b)
        await broker.drain()
        assert venue.open_count() == 2
    await venue.trade(BTC, 61_000.0, 0.01)  # a fills while nobody listens
    async with live(tmp_path, venue, clock=clock) as (_, broker2, _events2):
        assert not broker2.account.working(a.client_id)
        assert broker2.account.working(b.client_id)
        assert broker2.position("btcusd") == pytest.approx(0.01)
        assert any("missed fill" in line for line in broker2.report)
        assert venue.open_count() == 1
        assert len(placed(venue)) == 2  # nothing was sent again


async def test_clock_behind_the_venue_resyncs_and_signs_the_order_again(tmp_path, caplog):
    clock = LiveClock(start=T0)
    venue = FakeKrakenTrading(clock)
    async with live(tmp_path, venue, clock=clock) as (_, broker, _events):
        venue.skew = 30.0  # Kraken's clock runs 30 s ahead: our deadlines arrive expired
        with caplog.at_level(logging.WARNING, "providers.kraken"):
            broker.submit(order())
            await broker.wait_until(lambda: broker.fills)
        assert broker.session.offset == pytest.approx(30.0, abs=1.5)
        assert any("past its deadline" in r.getMessage() for r in caplog.records)
        assert len(placed(venue)) == 2
        assert len(venue.orders) == 1
        assert not broker.rejections


async def test_unknown_venue_orders_are_reported_and_adopted(tmp_path):
    clock = LiveClock(start=T0)
    venue = FakeKrakenTrading(clock)
    answer = await venue.new_order({"pair": "XBTUSD", "type": "buy", "ordertype": "limit",
                                    "volume": "0.01", "price": "60000.0"})
    manual = answer["txid"][0]  # placed without a cl_ord_id: known by Kraken's txid only
    limits = LiveLimits(unknown_orders="adopt", poll_every=0.05)
    async with live(tmp_path, venue, limits=limits, clock=clock) as (_, broker, _events):
        assert any(manual in line for line in broker.report)
        assert broker.account.working(f"adopted:{manual}")
        await venue.trade(BTC, 60_000.0, 0.01)
        await broker.wait_until(lambda: broker.fills)
        assert broker.position("btcusd") == pytest.approx(0.01)
        broker.submit(order(order_type="limit", limit_price=59_000.0))
        await broker.drain()
        await broker.kill_switch()
        assert venue.open_count() == 0


async def test_a_bad_signature_is_refused_by_the_venue(tmp_path):
    wrong = ApiKeys("kraken", Secret(API_KEY), Secret(SECRET[::-1].strip("=") + "=="), "test")
    clock = LiveClock(start=T0)
    venue = FakeKrakenTrading(clock)
    async with venue.running() as (rest, ws):
        KRAKEN.module.configure(**KRAKEN.endpoints(rest, ws))
        try:
            async with KRAKEN.module.open_trading(["btcusd"], now=clock.now,
                                                  keys=wrong) as session:
                with pytest.raises(VenueRejected, match="EAPI:Invalid signature"):
                    await session.balances()
                assert [r for r in venue.requests if r.path == "/0/private/BalanceEx"]
                assert venue.last_nonce == 0  # refused before its nonce counted
        finally:
            KRAKEN.module.reset()


async def test_no_key_signature_or_token_reaches_a_log_a_ledger_or_an_error(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    async with live(tmp_path) as (venue, broker, events):
        venue.lose_answers = 1
        broker.submit(order(order_type="limit", limit_price=61_000.0))
        broker.submit(order(size=1.0))  # insufficient funds
        venue.skew = 30.0
        broker.submit(order())
        await broker.wait_until(lambda: broker.fills)
        venue.replies.append(("POST", "/0/private/AddOrder",
                              HttpReply(200, {"error": ["EAPI:Rate limit exceeded"]})))
        broker.submit(order())
        await venue.drop_streams()
        await venue.subscribed.wait()
        await broker.kill_switch()
        errors += [str(e) for e in events] + [repr(broker), repr(broker.session)]
        errors += [r.reason for r in broker.rejections]
        signatures = {r.headers.get("api-sign") for r in venue.requests}
        tokens = set(venue.tokens)
    signatures.discard(None)
    assert len(signatures) > 5
    assert len(tokens) >= 2
    ledger = (tmp_path / "live1" / "ledger.log").read_bytes().decode("utf-8", "replace")
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for text in (logs, ledger, "\n".join(errors)):
        for secret in (API_KEY, SECRET, *signatures, *tokens):
            assert secret not in text


def test_cli_live_at_kraken_refuses_without_usable_keys(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env["ENGINE_HOME"] = str(tmp_path)
    strat = Path(__file__).parents[2] / "strategies" / "sma_cross.py"
    args = [sys.executable, "-m", "engine.cli", "run", str(strat), "--live", "--venue", "kraken",
            "--account", "k1", "--yes"]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "engine run: error: no kraken API keys: set ENGINE_KRAKEN_API_KEY and "
        "ENGINE_KRAKEN_API_SECRET, or write them to a mode-0600 keys file and pass --keys FILE "
        "(or ENGINE_KRAKEN_KEYS_FILE)"]
    env.update(ENGINE_KRAKEN_API_KEY=API_KEY, ENGINE_KRAKEN_API_SECRET="not-base64!")
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "engine run: error: kraken: the API secret is not base64 (copy the private key exactly "
        "as Kraken shows it)"]
    assert "not-base64!" not in out.stderr + out.stdout
