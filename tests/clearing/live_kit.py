"""How the live-trading tests meet each venue: a `Kit` names the provider, its loopback trading
venue (tests/providers/fake_trading*.py), keys, symbols and endpoints, and `live()` opens a live
broker on it the way `engine run --live` does (open_trading, open_live_account, run)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

import providers.binance as binance
import providers.kraken as kraken
from engine.clearing.venue_broker import LiveLimits, open_live_account
from engine.clock import LiveClock
from providers._net.keys import ApiKeys, Secret
from tests.providers import fake_trading as fb
from tests.providers import fake_trading_kraken as fk

T0 = 1_723_161_300.0


@dataclass(frozen=True)
class Kit:
    name: str
    module: Any
    fake: Callable[..., Any]  # (clock, **fields) -> a FakeExchange
    api_key: str
    secret: str
    symbol: str  # the engine's name of the traded pair
    pair: str  # the fake venue's own name of it (books, trades)
    base: str  # the fake's balance codes of its assets
    quote: str
    order_path: str  # where new orders are sent
    endpoints: Callable[[str, str], dict[str, str]]  # (rest, ws) -> provider options
    env: Callable[[str, str], dict[str, str]]  # (rest, ws) -> ENGINE_* variables

    @property
    def keys(self) -> ApiKeys:
        return ApiKeys(self.name, Secret(self.api_key), Secret(self.secret), "test")

    def placed(self, venue: Any) -> list:
        """The new-order requests the venue received."""
        return [r for r in venue.requests if r.method == "POST" and r.path == self.order_path]

    def book(self, venue: Any) -> dict:
        b = venue.books[self.pair]
        return {"symbol": self.symbol, "bid": b.bid, "ask": b.ask}


BINANCE = Kit(
    "binance", binance, fb.FakeBinanceTrading, fb.API_KEY, fb.SECRET, "btcusdt", "BTCUSDT",
    "BTC", "USDT", "/api/v3/order",
    lambda rest, ws: {"rest_url": rest, "ws_url": ws, "ws_api_url": ws + "/ws-api/v3"},
    lambda rest, ws: {"ENGINE_BINANCE_REST_URL": rest, "ENGINE_BINANCE_WS_URL": ws,
                      "ENGINE_BINANCE_WS_API_URL": ws + "/ws-api/v3"})
# Private calls unpaced in tests (the defaults model Kraken's Starter tier: 0.33 a second).
_KRAKEN_PACE = {"private_rate": "1000", "private_burst": "1000", "order_rate": "1000",
                "order_burst": "1000"}
KRAKEN = Kit(
    "kraken", kraken, fk.FakeKrakenTrading, fk.API_KEY, fk.SECRET, "btcusd", "XXBTZUSD",
    "XXBT", "ZUSD", "/0/private/AddOrder",
    lambda rest, ws: {"rest_url": rest, "ws_url": ws, "ws_auth_url": ws + fk.AUTH_PATH,
                      **_KRAKEN_PACE},
    lambda rest, ws: {"ENGINE_KRAKEN_REST_URL": rest, "ENGINE_KRAKEN_WS_URL": ws,
                      "ENGINE_KRAKEN_WS_AUTH_URL": ws + fk.AUTH_PATH})
KITS = (BINANCE, KRAKEN)


@asynccontextmanager
async def live(kit: Kit, path: Path, venue: Any = None, limits: LiveLimits | None = None,
               clock: LiveClock | None = None, account: str = "live1",
               wait_stream: bool = True, options: dict | None = None):
    """Start `venue` (a new fake by default) and a live broker on it; yield (venue, broker,
    the events the strategy side heard)."""
    clock = clock or LiveClock(start=T0)
    venue = venue or kit.fake(clock)
    async with venue.running() as (rest, ws):
        kit.module.configure(**kit.endpoints(rest, ws), **(options or {}))
        try:
            async with kit.module.open_trading([kit.symbol], now=clock.now,
                                               keys=kit.keys) as session:
                await session.sync_time()
                broker = await open_live_account(account, session, clock, symbols=[kit.symbol],
                                                 limits=limits or LiveLimits(poll_every=0.05),
                                                 path=path / account)
                events: list = []
                broker.attach(None, events.extend)
                broker.on_batch([kit.book(venue)], [], [])
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(broker.run)
                        if wait_stream:
                            await venue.subscribed.wait()
                            await broker.wait_until(lambda: broker.reconciled >= 2)  # start, stream
                        yield venue, broker, events
                        nursery.cancel_scope.cancel()
                finally:
                    broker.ledger.close()
        finally:
            kit.module.reset()
