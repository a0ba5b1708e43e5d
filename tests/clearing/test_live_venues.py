"""Scenarios every venue must pass alike, run against each loopback trading venue: the same
strategy on the same quotes fills the same on the paper broker and at the venue, and a real
`engine run --live` process killed with SIGKILL while orders work, with fills made during the
downtime, reconciles on restart (nothing doubled, nothing lost)."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from engine.clearing.broker import open_account
from engine.clearing.config import BrokerConfig, Fees
from engine.clearing.ledger import read_events
from engine.clock import LiveClock
from engine.orders import ModifyOrder, OrderAccepted, OrderFilled, SubmitOrder
from tests.clearing.live_kit import KITS, T0, Kit, live

IDS = [k.name for k in KITS]


def quotes(symbol: str, n: int = 80, seed: int = 11) -> list[dict]:
    """A seeded random walk of top-of-book quotes on a 0.1 tick (both venues' grids)."""
    rng = random.Random(seed)
    mid, out = 61_800.0, []
    for _ in range(n):
        mid *= math.exp(rng.gauss(0, 4e-4))
        bid = round(mid - 0.1, 1)
        ask = round(bid + 0.2, 1)
        out.append({"symbol": symbol, "bid": bid, "ask": ask,
                    "ticks": [{"type": "bid", "price": bid, "size": 10.0},
                              {"type": "ask", "price": ask, "size": 10.0}]})
    return out


class MeanReversion:
    """The strategy under test: buy 0.01 when the mid drops 0.03 % under its 5-quote average
    while flat, sell it back when the mid rises as far above it. It sees only its router."""

    def __init__(self, router, symbol: str) -> None:
        self.router, self.symbol, self.mids = router, symbol, []

    def on_quote(self, q: dict) -> None:
        mid = (q["bid"] + q["ask"]) / 2
        self.mids = [*self.mids[-4:], mid]
        if len(self.mids) < 5:
            return
        ma = sum(self.mids) / 5
        pos = self.router.position(self.symbol) + self.router.working_position(self.symbol)
        if pos < 1e-12 and mid < ma * (1 - 3e-4):
            self.router.submit(SubmitOrder(symbol=self.symbol, side="buy", size=0.01))
        elif pos > 1e-12 and mid > ma * (1 + 3e-4):
            self.router.submit(SubmitOrder(symbol=self.symbol, side="sell", size=0.01))


@pytest.mark.parametrize("kit", KITS, ids=IDS)
async def test_paper_and_venue_give_the_same_fills_on_the_same_quotes(tmp_path, kit: Kit):
    clock = LiveClock(start=T0)
    # The paper broker charged as the fake venue charges: 0.1 % of notional, maker or taker.
    config = BrokerConfig(fees=Fees(maker_pct=0.001, taker_pct=0.001))
    paper = open_account("paper1", [kit.symbol], cash=10_000.0, config=config,
                         path=tmp_path / "paper1", clock=clock)
    try:
        async with live(kit, tmp_path, clock=clock) as (venue, broker, _):
            on_paper = MeanReversion(paper, kit.symbol)
            at_venue = MeanReversion(broker, kit.symbol)
            for q in quotes(kit.symbol):
                paper.on_batch([q], [], [])
                on_paper.on_quote(q)
                await venue.set_book(kit.pair, q["bid"], q["ask"])
                broker.on_batch([q], [], [])
                at_venue.on_quote(q)
                await broker.drain()
                await broker.wait_until(lambda: not broker.account.open_orders())
            assert len(paper.fills) >= 4  # the walk makes it trade both ways, more than once

            def seen(fills: list[OrderFilled]) -> list[tuple]:
                return [(f.side, f.size, f.price, round(f.fee, 9), f.remaining) for f in fills]

            assert seen(broker.fills) == seen(paper.fills)
            assert broker.position(kit.symbol) == pytest.approx(paper.position(kit.symbol))
            assert broker.account.cash == pytest.approx(paper.account.cash, abs=1e-6)
            assert broker.account.cash == pytest.approx(venue.balances[kit.quote], abs=1e-6)
    finally:
        paper.ledger.close()


# -- kill -9 of a live engine ------------------------------------------------------------------

STRATEGY = '''
from engine import Strategy


class Placer(Strategy):
    """On its first quote: a market buy and two resting limit buys (when `place`)."""

    symbols = ("{symbol}",)
    timeframe = "1m"
    place: bool = True

    def on_start(self) -> None:
        self.done = not self.place

    def on_quote(self, quote: dict) -> None:
        if self.done:
            return
        self.done = True
        self.ctx.buy("{symbol}", 0.01)
        self.ctx.buy("{symbol}", 0.01, limit=61000.0)
        self.ctx.buy("{symbol}", 0.01, limit=60000.0)
'''


def _fills(directory: Path) -> list[OrderFilled]:
    try:
        return [e for _, e in read_events(directory) if isinstance(e, OrderFilled)]
    except Exception:  # noqa: BLE001 - not written yet
        return []


async def _until(condition, what: str, proc: trio.Process, log: Path,
                 timeout: float = 180.0) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            if proc.returncode is not None:
                break
            await trio.sleep(0.1)
        else:
            return
    output = await trio.Path(log).read_text()
    raise AssertionError(f"{what}: not reached (engine exit {proc.returncode}); its output:\n"
                         f"{output[-3000:]}")


@pytest.mark.parametrize("kit", KITS, ids=IDS)
async def test_engine_killed_with_sigkill_reconciles_on_restart(tmp_path, kit: Kit):
    clock = LiveClock()
    venue = kit.fake(clock)
    strat = tmp_path / "placer.py"
    strat.write_text(STRATEGY.format(symbol=kit.symbol))
    account = tmp_path / "home" / "accounts" / "k9"
    async with venue.running() as (rest, ws):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        env.update(kit.env(rest, ws), ENGINE_HOME=str(tmp_path / "home"))
        env[f"ENGINE_{kit.name.upper()}_API_KEY"] = kit.api_key
        env[f"ENGINE_{kit.name.upper()}_API_SECRET"] = kit.secret
        pace = ["-o", "private_rate=1000", "-o", "private_burst=1000"] \
            if kit.name == "kraken" else []

        async def start(place: bool, out: Path) -> trio.Process:
            with out.open("wb") as sink:
                return await trio.lowlevel.open_process(
                    [sys.executable, "-m", "engine.cli", "run", str(strat), "--live",
                     "--venue", kit.name, "--account", "k9", "--yes", "--history", "1",
                     "-p", f"place={str(place).lower()}", *pace],
                    env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)

        first_log = tmp_path / "first.log"
        proc = await start(True, first_log)
        try:
            await _until(lambda: venue.open_count() == 2 and len(_fills(account)) == 1,
                         "first run: two orders working, the market buy filled", proc,
                         first_log)
            await _until(lambda: venue.subscribed.is_set(), "first run: private stream up",
                         proc, first_log)
            os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        await venue.drop_streams()  # the dead engine's socket, as the venue would see it go
        # While the engine is down: one order fills, the other half fills.
        await venue.trade(kit.pair, 61_000.0, 0.01)
        await venue.trade(kit.pair, 60_000.0, 0.004)
        second_log = tmp_path / "second.log"
        proc = await start(False, second_log)
        try:
            await _until(lambda: len(_fills(account)) == 3 and venue.subscribed.is_set(),
                         "restart: the two fills made meanwhile recorded", proc, second_log)
            proc.send_signal(signal.SIGINT)  # Ctrl-C: stop, leave working orders working
            with trio.fail_after(60):
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    events = [e for _, e in read_events(account)]
    fills = [e for e in events if isinstance(e, OrderFilled)]
    accepted = [e for e in events if isinstance(e, OrderAccepted)]
    assert len(accepted) == 3  # nothing placed twice ...
    assert len(kit.placed(venue)) == 3  # ... at the venue either
    assert len(venue.orders) == 3
    assert sorted((f.price, f.size) for f in fills if f.price < 61_500) == \
        [(60_000.0, 0.004), (61_000.0, 0.01)]
    assert len({(f.client_id, f.fill_id) for f in fills}) == len(fills) == 3
    assert sum(f.size for f in fills) == pytest.approx(0.024)
    assert venue.balances[kit.base] == pytest.approx(0.024)
    assert venue.open_count() == 1  # the half-filled order still works
    assert "happened while the engine was not listening" in \
        await trio.Path(second_log).read_text()


@pytest.mark.parametrize("kit", KITS, ids=IDS)
async def test_a_post_only_order_rests_or_is_refused_alike_on_paper_and_at_the_venue(tmp_path,
                                                                                   kit: Kit):
    clock = LiveClock(start=T0)
    paper = open_account("paper1", [kit.symbol], cash=10_000.0, path=tmp_path / "paper1",
                         clock=clock)
    try:
        async with live(kit, tmp_path, clock=clock) as (venue, broker, events):
            book = kit.book(venue)
            paper.on_batch([book], [], [])
            rests = SubmitOrder(symbol=kit.symbol, side="buy", size=0.01, order_type="limit",
                                limit_price=round(book["bid"] - 100, 1), post_only=True)
            takes = SubmitOrder(symbol=kit.symbol, side="buy", size=0.01, order_type="limit",
                                limit_price=round(book["ask"] + 0.1, 1), post_only=True)
            for b in (paper, broker):
                b.submit(rests)
                b.submit(takes)
            await broker.drain()
            sent = kit.placed(venue)
            # Both reached the venue as post-only orders; it refused the one that would take.
            assert len(sent) == 2
            flag = "LIMIT_MAKER" if kit.name == "binance" else "oflags=post"
            assert all(flag in r.query + r.body for r in sent)
            for b in (paper, broker):
                assert [r.client_id for r in b.rejections] == [takes.client_id]
                assert [o.client_id for o in b.account.open_orders()] == [rests.client_id]
            assert "would take liquidity" in paper.rejections[0].reason
            assert ("immediately match" if kit.name == "binance" else "Post only") in \
                broker.rejections[0].reason
    finally:
        paper.ledger.close()


def test_post_only_is_for_resting_limit_orders():
    with pytest.raises(ValueError, match="post_only is for a resting limit order"):
        SubmitOrder(symbol="x", side="buy", size=1, post_only=True)
    with pytest.raises(ValueError, match="post_only is for a resting limit order"):
        SubmitOrder(symbol="x", side="buy", size=1, order_type="limit", limit_price=1.0,
                    tif="IOC", post_only=True)


@pytest.mark.parametrize("kit", KITS, ids=IDS)
async def test_kill_switch_cancels_everything_and_refuses_new_orders(tmp_path, kit: Kit):
    async with live(kit, tmp_path) as (venue, broker, _):
        for px in (60_000.0, 60_500.0, 61_000.0):
            broker.submit(SubmitOrder(symbol=kit.symbol, side="buy", size=0.01,
                                      order_type="limit", limit_price=px))
        await broker.drain()
        assert venue.open_count() == 3
        await broker.kill_switch()
        assert venue.open_count() == 0
        assert not broker.account.open_orders()
        broker.submit(SubmitOrder(symbol=kit.symbol, side="buy", size=0.01))
        assert "halted" in broker.rejections[-1].reason
        assert (tmp_path / "live1" / "HALT").exists()


@pytest.mark.parametrize("kit", KITS, ids=IDS)
async def test_modify_is_cancel_replace_under_the_same_client_id(tmp_path, kit: Kit):
    async with live(kit, tmp_path) as (venue, broker, _):
        o = SubmitOrder(symbol=kit.symbol, side="buy", size=0.02, order_type="limit",
                        limit_price=60_000.0)
        broker.submit(o)
        await broker.drain()
        broker.modify(ModifyOrder(client_id=o.client_id, limit_price=60_100.0))
        await broker.drain()
        working = [v for v in venue.orders.values() if v.status == "NEW"]
        assert [v.price for v in working] == [60_100.0]
        assert working[0].client_id == broker.venue_id(o.client_id)
        assert working[0].client_id.endswith("r1")
        await venue.trade(kit.pair, 60_100.0, 0.02)
        await broker.wait_until(lambda: broker.fills)
        assert broker.fills[0].client_id == o.client_id
