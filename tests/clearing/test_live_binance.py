"""The live broker against a loopback Binance that trades (tests/providers/fake_trading.py):
each scenario of going live, with signed requests checked as Binance documents them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from engine.clearing.ledger import read_events
from engine.clearing.venue_broker import LiveLimits, VenueBroker
from engine.clock import LiveClock
from engine.orders import CancelOrder, OrderFilled, OrderRejected, SubmitOrder
from tests.clearing.live_kit import BINANCE, T0
from tests.clearing.live_kit import live as kit_live
from tests.providers.fake_trading import API_KEY, SECRET, FakeBinanceTrading, HttpReply

KEYS = BINANCE.keys


def order(side: str = "buy", size: float = 0.01, **kw) -> SubmitOrder:
    return SubmitOrder(symbol="btcusdt", side=side, size=size, **kw)


def live(path: Path, venue: FakeBinanceTrading | None = None, **kw):
    return kit_live(BINANCE, path, venue, **kw)


def placed(venue: FakeBinanceTrading) -> list:
    return BINANCE.placed(venue)


async def test_round_trip(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        broker.submit(order())
        await broker.wait_until(lambda: broker.fills)
        await broker.drain()
        fill = broker.fills[0]
        assert (fill.side, fill.size, fill.price, fill.remaining) == ("buy", 0.01, 61_800.5, 0.0)
        assert fill.fee == pytest.approx(0.01 * 61_800.5 * 0.001)
        assert broker.position("btcusdt") == pytest.approx(0.01)
        assert venue.balances["BTC"] == pytest.approx(0.01)
        assert broker.account.cash == pytest.approx(venue.balances["USDT"])
        kinds = [type(e).__name__ for e in events]
        assert kinds.count("OrderFilled") == 1
        assert "OrderAccepted" in kinds
        # The venue saw the ledger's id, and one request.
        assert len(placed(venue)) == 1
        assert venue.orders[max(venue.orders)].client_id == broker.venue_id(fill.client_id)
        sell = order("sell", 0.01)
        broker.submit(sell)
        await broker.wait_until(lambda: len(broker.fills) == 2)
        assert broker.position("btcusdt") == pytest.approx(0.0)
    ledger = [e for _, e in read_events(tmp_path / "live1")]
    assert ledger[0].venue == "binance"
    assert ledger[0].currency == "USDT"
    assert sum(isinstance(e, OrderFilled) for e in ledger) == 2


async def test_partial_fills_and_cancel(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        o = order(size=0.05, order_type="limit", limit_price=61_000.0)
        broker.submit(o)
        await broker.drain()
        assert venue.open_count() == 1
        await venue.trade("BTCUSDT", 61_000.0, 0.02)
        await broker.wait_until(lambda: broker.fills)
        assert broker.fills[0].remaining == pytest.approx(0.03)
        assert broker.fills[0].liquidity == "maker"
        await venue.trade("BTCUSDT", 60_990.0, 0.01)
        await broker.wait_until(lambda: len(broker.fills) == 2)
        assert broker.fills[1].remaining == pytest.approx(0.02)
        broker.cancel(CancelOrder(client_id=o.client_id))
        await broker.drain()
        assert not broker.account.working(o.client_id)
        assert venue.open_count() == 0
        assert broker.position("btcusdt") == pytest.approx(0.03)
        cancelled = [e for e in events if type(e).__name__ == "OrderCancelled"]
        assert cancelled[-1].remaining == pytest.approx(0.02)


async def test_rejections_insufficient_balance_and_filters(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        broke = order(size=1.0)  # 61,800 USDT of a 10,000 USDT account
        broker.submit(broke)
        await broker.drain()
        assert "insufficient balance" in broker.rejections[-1].reason
        assert len(placed(venue)) == 1  # the venue said no
        odd = order(size=0.000015)
        broker.submit(odd)
        small = order(size=0.00001)
        broker.submit(small)
        tick = order(order_type="limit", limit_price=61_000.005)
        broker.submit(tick)
        await broker.drain()
        reasons = [r.reason for r in broker.rejections[-3:]]
        assert "lot size" in reasons[0]
        assert "minimum of 5" in reasons[1]
        assert "tick size" in reasons[2]
        assert len(placed(venue)) == 1  # filters refused them before any request left
        assert not broker.account.open_orders()
        got = [e.client_id for e in events if isinstance(e, OrderRejected)]
        assert got == [broke.client_id, odd.client_id, small.client_id, tick.client_id]


@pytest.mark.parametrize(("status", "words"), [(429, "rate limit"), (418, "banned")])
async def test_rate_limit_answers_reject_and_block(tmp_path, status, words):
    async with live(tmp_path) as (venue, broker, _):
        venue.replies.append(("POST", "/api/v3/order", HttpReply(
            status, {"code": -1003, "msg": "Too many requests."}, [("Retry-After", "1")])))
        broker.submit(order())
        await broker.drain()
        assert words in broker.rejections[-1].reason
        assert not broker.account.open_orders()
        t = trio.current_time()
        broker.submit(order())
        await broker.wait_until(lambda: broker.fills)
        assert trio.current_time() - t >= 0.9  # waited out Retry-After before the next request


async def test_lost_answer_is_resolved_by_query_without_a_duplicate(tmp_path):
    async with live(tmp_path) as (venue, broker, events):
        venue.lose_answers = 1
        o = order(order_type="limit", limit_price=61_000.0)
        broker.submit(o)
        await broker.drain()
        assert len(placed(venue)) == 1  # never sent again
        assert venue.open_count() == 1
        assert broker.account.working(o.client_id)
        queries = [r for r in venue.requests if r.method == "GET" and r.path == "/api/v3/order"]
        assert any(broker.venue_id(o.client_id) in r.query for r in queries)
        assert any(type(e).__name__ == "OrderAccepted" for e in events)


async def test_stream_drop_during_a_fill_is_reconciled(tmp_path):
    async with live(tmp_path) as (venue, broker, _):
        o = order(order_type="limit", limit_price=61_000.0)
        broker.submit(o)
        await broker.drain()
        venue.silent = True  # the stream goes quiet, then drops, while the order fills
        await venue.trade("BTCUSDT", 61_000.0, 0.01)
        await venue.drop_streams()
        venue.silent = False
        await broker.wait_until(lambda: broker.fills)
        assert broker.fills[0].size == pytest.approx(0.01)
        assert not broker.account.working(o.client_id)
        await venue.subscribed.wait()  # reconnected
        await broker.wait_until(lambda: broker.reconciled >= 2)
        assert len(broker.fills) == 1  # the stream's replay after reconnect was absorbed


async def test_restart_after_kill_reconciles_fills_made_meanwhile(tmp_path):
    clock = LiveClock(start=T0)
    venue = FakeBinanceTrading(clock)
    async with live(tmp_path, venue, clock=clock) as (_, broker, _events):
        a = order(order_type="limit", limit_price=61_000.0)
        b = order(order_type="limit", limit_price=60_000.0)
        broker.submit(a)
        broker.submit(b)
        await broker.drain()
        assert venue.open_count() == 2
    # The engine is gone (its ledger closed as a kill would leave it: the last append durable).
    await venue.trade("BTCUSDT", 61_000.0, 0.01)  # a fills while nobody listens
    async with live(tmp_path, venue, clock=clock) as (_, broker2, _events2):
        assert not broker2.account.working(a.client_id)
        assert broker2.account.working(b.client_id)
        assert broker2.position("btcusdt") == pytest.approx(0.01)
        assert any("missed fill" in line for line in broker2.report)
        assert venue.open_count() == 1
        assert len(placed(venue)) == 2  # nothing was sent again


async def test_clock_skew_beyond_recv_window_resyncs(tmp_path, caplog):
    clock = LiveClock(start=T0)
    venue = FakeBinanceTrading(clock, skew=0.0)
    async with live(tmp_path, venue, clock=clock) as (_, broker, _events):
        venue.skew = 30.0  # the venue's clock runs 30 s ahead of ours
        with caplog.at_level(logging.WARNING, "providers.binance"):
            broker.submit(order())
            await broker.wait_until(lambda: broker.fills)
        assert broker.session.offset == pytest.approx(30.0, abs=1.0)
        assert any("recvWindow" in r.getMessage() for r in caplog.records)
        assert len(broker.rejections) == 0


async def test_halt_file_from_engine_account_halt_stops_a_running_broker(tmp_path):
    async with live(tmp_path) as (venue, broker, _):
        broker.submit(order(order_type="limit", limit_price=60_000.0))
        await broker.drain()
        (tmp_path / "live1" / "HALT").write_text("engine account halt\n")
        await broker.wait_until(lambda: not broker.account.open_orders())
        assert venue.open_count() == 0
        assert broker.halted == "engine account halt"


async def test_risk_limits_refuse_before_sending(tmp_path):
    limits = LiveLimits(max_order_notional=1000.0, max_position=0.02, max_open_orders=1,
                        poll_every=0.05)
    async with live(tmp_path, limits=limits) as (venue, broker, _):
        broker.submit(order(size=0.02))  # 1,236 USDT
        broker.submit(order(size=0.01, order_type="limit", limit_price=60_000.0))
        broker.submit(order(size=0.01, order_type="limit", limit_price=59_000.0))
        await broker.drain()
        reasons = [r.reason for r in broker.rejections]
        assert "above the limit of 1,000.00" in reasons[0]
        assert "orders are working already" in reasons[1]
        assert len(placed(venue)) == 1


async def test_daily_loss_limit_halts(tmp_path):
    async with live(tmp_path, limits=LiveLimits(max_daily_loss=5.0, poll_every=0.05)) \
            as (venue, broker, _):
        broker.submit(order(size=0.01))
        await broker.wait_until(lambda: broker.fills)
        broker.submit(order(order_type="limit", limit_price=50_000.0))
        await broker.drain()
        broker.on_batch([{"symbol": "btcusdt", "bid": 60_000.0, "ask": 60_001.0}], [], [])
        assert broker.halted is not None
        assert "daily loss" in broker.halted
        await broker.drain()
        assert venue.open_count() == 0


async def test_unknown_venue_orders_are_reported_or_adopted(tmp_path):
    clock = LiveClock(start=T0)
    venue = FakeBinanceTrading(clock)
    await venue.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                           "quantity": "0.01", "price": "60000", "newClientOrderId": "manual1"})
    limits = LiveLimits(unknown_orders="adopt", poll_every=0.05)
    async with live(tmp_path, venue, limits=limits, clock=clock) as (_, broker, _events):
        assert any("manual1" in line for line in broker.report)
        assert broker.account.working("adopted:manual1")
        await venue.trade("BTCUSDT", 60_000.0, 0.01)
        await broker.wait_until(lambda: broker.fills)
        assert broker.position("btcusdt") == pytest.approx(0.01)


def test_broker_is_a_router():
    for name in ("submit", "cancel", "modify", "position", "attach", "on_batch", "run"):
        assert callable(getattr(VenueBroker, name))


async def test_no_key_or_signature_reaches_a_log_a_ledger_or_an_error(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    async with live(tmp_path) as (venue, broker, events):
        venue.lose_answers = 1
        broker.submit(order(order_type="limit", limit_price=61_000.0))
        broker.submit(order(size=1.0))  # insufficient balance
        venue.skew = 30.0
        broker.submit(order())
        await broker.wait_until(lambda: broker.fills)
        venue.replies.append(("POST", "/api/v3/order", HttpReply(429, {"code": -1003, "msg":
                                                                       "Too many requests."},
                                                                 [("Retry-After", "0")])))
        broker.submit(order())
        await venue.drop_streams()
        await venue.subscribed.wait()
        await broker.kill_switch()
        errors += [str(e) for e in events] + [repr(broker), repr(broker.session)]
        errors += [r.reason for r in broker.rejections]
        signatures = {dict(p.split("=", 1) for p in (r.query + "&" + r.body).split("&")
                           if "=" in p).get("signature") for r in venue.requests}
    signatures.discard(None)
    assert len(signatures) > 5
    ledger = (tmp_path / "live1" / "ledger.log").read_bytes().decode("utf-8", "replace")
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for text in (logs, ledger, "\n".join(errors)):
        assert API_KEY not in text
        assert SECRET not in text
        for sig in signatures:
            assert sig not in text


def _engine(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_live_refuses_without_keys_and_halt_resume(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    env["ENGINE_HOME"] = str(tmp_path)
    strat = Path(__file__).parents[2] / "strategies" / "sma_cross.py"
    out = _engine("run", str(strat), "--live", "--venue", "binance", "--account", "l1", "--yes",
                  env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "engine run: error: no binance API keys: set ENGINE_BINANCE_API_KEY and "
        "ENGINE_BINANCE_API_SECRET, or write them to a mode-0600 keys file and pass --keys FILE "
        "(or ENGINE_BINANCE_KEYS_FILE)"]
    out = _engine("run", str(strat), "--live", "--venue", "kraken", "--account", "l1",
                  "--testnet", env=env)
    assert "kraken has no spot test network" in out.stderr
    (tmp_path / "accounts" / "l1").mkdir(parents=True)
    assert _engine("account", "halt", "l1", env=env).returncode == 0
    assert (tmp_path / "accounts" / "l1" / "HALT").exists()
    assert _engine("account", "resume", "l1", env=env).returncode == 0
    assert not (tmp_path / "accounts" / "l1" / "HALT").exists()
