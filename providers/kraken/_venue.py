"""Kraken spot as a `Venue`: endpoints, pacing, websocket v2 subscriptions and trade paging.

Kraken's public REST endpoints are limited per IP (about one call a second, with short bursts)
and report a breach in the body with HTTP 200 (`EGeneral:Too many requests`), so requests are
paced by a token bucket and a breach waits and retries.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np

from providers._net import (
    HttpClient,
    Instrument,
    InstrumentTable,
    MalformedFrame,
    Option,
    RateLimiter,
    RetryAfter,
    SymbolState,
    Trade,
    Venue,
    VenueError,
    common_options,
)
from providers._net.events import Event
from providers._net.options import choice, number, url

from ._parse import (
    INTERVALS,
    parse_asset_pairs,
    parse_frame,
    parse_ohlc,
    parse_ticker,
    parse_trades,
    rest_result,
)

__all__ = ["KrakenVenue"]

PAGE = 1000  # Trades returns at most 1000 rows a call
BURST = 3  # requests allowed back to back before pacing starts
_RATE_ERRORS = ("EGeneral:Too many requests", "EAPI:Rate limit exceeded")


def _check(payload: Any) -> None:
    errors = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(errors, list) and any(isinstance(e, str) and e.startswith(_RATE_ERRORS)
                                        for e in errors):
        raise RetryAfter(None, ", ".join(e[:100] for e in errors if isinstance(e, str)))


class KrakenVenue(Venue):
    name = "kraken"
    OPTIONS: dict[str, Option] = {
        # Kraken sends a heartbeat every second on a subscribed connection: 10 s is silence.
        **common_options("kraken", "https://api.kraken.com", "wss://ws.kraken.com/v2",
                         stale_after=10.0),
        "request_rate": Option(1.0, number(), "REST requests per second (bursts of 3)"),
        "bar_interval": Option("1", choice(*INTERVALS), "OHLC interval of backfilled bars, "
                               "minutes"),
        # Order entry (engine run --live): the authenticated websocket carries `executions`.
        "ws_auth_url": Option("wss://ws-auth.kraken.com/v2", url("ws", "wss"),
                              "authenticated websocket v2 URL (the executions stream)",
                              env="ENGINE_KRAKEN_WS_AUTH_URL"),
        # AddOrder's `deadline` takes now + 2 s .. now + 60 s.
        "order_deadline": Option(5.0, number(2.0, open_lo=False, hi=60.0),
                                 "seconds after which Kraken refuses an order still on its way"),
        # The Starter tier's REST counter: at most 15, decaying by 0.33 a second.
        "private_rate": Option(0.33, number(), "private REST calls per second (the account "
                               "counter's decay)"),
        "private_burst": Option(15.0, number(), "private REST calls back to back (the account "
                                "counter's maximum)"),
        # The Starter tier's trading counter: at most 60, decaying by 1 a second.
        "order_rate": Option(1.0, number(), "AddOrder/CancelOrder calls per second"),
        "order_burst": Option(60.0, number(), "AddOrder/CancelOrder calls back to back"),
    }

    def make_limiter(self) -> RateLimiter:
        return RateLimiter(self.name, rate=self.options["request_rate"], burst=BURST,
                           max_wait=self.options["max_retry_wait"])

    async def _get(self, http: HttpClient, path: str, params: dict[str, Any] | None = None
                   ) -> dict:
        payload = await http.get_json(path, params, check=_check)
        try:
            return rest_result(payload, path)
        except MalformedFrame as exc:
            raise VenueError(f"kraken: {exc}") from None

    async def load_instruments(self, http: HttpClient) -> InstrumentTable:
        result = await self._get(http, "/0/public/AssetPairs")
        return parse_asset_pairs(result)

    async def first_quotes(self, http: HttpClient, states: list[SymbolState]) -> None:
        try:
            result = await self._get(http, "/0/public/Ticker",
                                     {"pair": ",".join(st.rest_symbol for st in states)})
            books = parse_ticker(result)
            for st in states:
                # Ticker answers by REST pair name ("XXBTZUSD"), whatever name it was asked.
                pair = st.inst.extra.get("rest_pair") if st.inst else None
                st.book = books.get(pair or st.rest_symbol) or books.get(st.rest_symbol)
                if st.book is not None:
                    st.last_price = st.book.last
                # The last 1000 trades (Kraken's default): the newest is the baseline.
                trades, _ = parse_trades(await self._get(http, "/0/public/Trades",
                                                         {"pair": st.rest_symbol}),
                                         st.venue_symbol)
                if trades:
                    st.set_baseline(trades[-1])
        except MalformedFrame as exc:
            raise VenueError(f"kraken: unexpected first-quote answer: {exc}") from None

    async def history(self, http: HttpClient, inst: Instrument, count: int
                      ) -> AsyncGenerator[np.ndarray, None]:
        # Kraken serves only the 720 most recent bars of an interval ("older data cannot be
        # retrieved, regardless of the value of since"): one frame, whatever `count` asks.
        result = await self._get(http, "/0/public/OHLC", {
            "pair": inst.rest_symbol, "interval": self.options["bar_interval"]})
        try:
            bars = parse_ohlc(result, inst.key)
        except MalformedFrame as exc:
            raise VenueError(f"kraken: unexpected OHLC answer: {exc}") from None
        if len(bars):
            yield bars

    def ws_endpoint(self, states: list[SymbolState]) -> str:
        return self.options["ws_url"]

    def subscribe_frames(self, states: list[SymbolState]) -> list[str]:
        symbols = [st.venue_symbol for st in states]
        return [
            json.dumps({"method": "subscribe", "params": {
                "channel": "trade", "symbol": symbols, "snapshot": False}, "req_id": 1}),
            # event_trigger "bbo": an update on every change of the best bid or offer.
            json.dumps({"method": "subscribe", "params": {
                "channel": "ticker", "symbol": symbols, "event_trigger": "bbo",
                "snapshot": True}, "req_id": 2}),
        ]

    def acks_expected(self, states: list[SymbolState]) -> int:
        return 2 * len(states)  # one answer per symbol per channel

    def parse(self, frame: str | bytes) -> list[Event]:
        return parse_frame(frame)

    def gap_cursor(self, state: SymbolState) -> str:
        assert state.last_time is not None
        # `since` in whole seconds, a second early: the overlap is dropped by trade id.
        return str(int(state.last_time) - 1)

    async def trade_page(self, http: HttpClient, state: SymbolState, cursor: str,
                         horizon: float | None) -> tuple[list[Trade], str, bool]:
        result = await self._get(http, "/0/public/Trades",
                                 {"pair": state.rest_symbol, "since": cursor})
        try:
            trades, last = parse_trades(result, state.venue_symbol)
        except MalformedFrame as exc:
            raise VenueError(f"kraken: unexpected Trades answer: {exc}") from None
        return trades, last or cursor, len(trades) >= PAGE
