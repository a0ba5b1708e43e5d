"""Binance spot as a `Venue`: endpoints, request weights, subscriptions and paging.

Request weights are Binance's documented ones for the public market-data endpoints used here;
the per-minute budget comes from exchangeInfo's `rateLimits` (6000 at the time of writing).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from providers._net import (
    HttpClient,
    Instrument,
    InstrumentTable,
    MalformedFrame,
    Option,
    RateLimiter,
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
    parse_agg_trades,
    parse_book_tickers,
    parse_exchange_info,
    parse_frame,
    parse_klines,
)

__all__ = ["BinanceVenue"]

# Request weights (binance-spot-api-docs rest-api.md, "Weight" of each endpoint).
W_EXCHANGE_INFO = 20
W_KLINES = 2
W_AGG_TRADES = 4
W_TIME = 1
W_BOOK_TICKER_ONE, W_BOOK_TICKER_MANY = 2, 4
DEFAULT_WEIGHT_LIMIT = 6000  # REQUEST_WEIGHT per minute, until exchangeInfo says otherwise
PAGE = 1000  # the most rows klines and aggTrades return per request
# aggTrades: "If startTime and endTime are sent, time between startTime and endTime must be
# less than 1 hour."
HOUR_MS = 3_600_000


class BinanceVenue(Venue):
    name = "binance"
    OPTIONS: dict[str, Option] = {
        **common_options("binance", "https://api.binance.com", "wss://stream.binance.com:9443",
                         stale_after=30.0),
        "trade_stream": Option("trade", choice("trade", "aggTrade"),
                               "live trade stream: every print (trade) or aggregates (aggTrade)"),
        "bar_interval": Option("1m", choice(*INTERVALS), "kline interval of backfilled bars"),
        # Order entry (engine run --live): the WebSocket API carries the user data stream.
        "ws_api_url": Option("wss://ws-api.binance.com:443/ws-api/v3", url("ws", "wss"),
                             "WebSocket API URL (the private user data stream)",
                             env="ENGINE_BINANCE_WS_API_URL"),
        "recv_window": Option(5000.0, number(hi=60000.0), "recvWindow of signed requests, ms"),
    }

    def make_limiter(self) -> RateLimiter:
        return RateLimiter(self.name, weight_limit=DEFAULT_WEIGHT_LIMIT,
                           weight_header="X-MBX-USED-WEIGHT-1M",
                           max_wait=self.options["max_retry_wait"])

    async def load_instruments(self, http: HttpClient) -> InstrumentTable:
        payload = await http.get_json("/api/v3/exchangeInfo", weight=W_EXCHANGE_INFO)
        try:
            table, weight = parse_exchange_info(payload)
        except MalformedFrame as exc:
            raise VenueError(f"binance: unexpected exchangeInfo answer: {exc}") from None
        if weight:
            http.limiter.set_weight_limit(weight)
        return table

    async def first_quotes(self, http: HttpClient, states: list[SymbolState]) -> None:
        names = [st.rest_symbol for st in states]
        if len(names) == 1:
            params, weight = {"symbol": names[0]}, W_BOOK_TICKER_ONE
        else:
            params = {"symbols": json.dumps(names, separators=(",", ":"))}
            weight = W_BOOK_TICKER_MANY
        try:
            books = parse_book_tickers(await http.get_json("/api/v3/ticker/bookTicker", params,
                                                           weight=weight))
            for st in states:
                st.book = books.get(st.rest_symbol)
                rows = await http.get_json("/api/v3/aggTrades",
                                           {"symbol": st.rest_symbol, "limit": 1},
                                           weight=W_AGG_TRADES)
                latest = parse_agg_trades(rows, st.venue_symbol)
                if latest:
                    st.set_baseline(latest[-1])
        except MalformedFrame as exc:
            raise VenueError(f"binance: unexpected first-quote answer: {exc}") from None

    async def history(self, http: HttpClient, inst: Instrument, count: int
                      ) -> AsyncGenerator[np.ndarray, None]:
        interval = self.options["bar_interval"]
        server = await http.get_json("/api/v3/time", weight=W_TIME)
        try:
            server_ms = int(server["serverTime"])
        except (KeyError, TypeError, ValueError):
            raise VenueError(f"binance: unexpected /api/v3/time answer: {server!r:.80}") from None
        end_ms: int | None = None
        for _ in range(count):
            params: dict[str, Any] = {"symbol": inst.rest_symbol, "interval": interval,
                                      "limit": PAGE}
            if end_ms is not None:
                params["endTime"] = end_ms
            rows = await http.get_json("/api/v3/klines", params, weight=W_KLINES)
            try:
                bars, oldest = parse_klines(rows, inst.key, server_ms)
            except MalformedFrame as exc:
                raise VenueError(f"binance: unexpected klines answer: {exc}") from None
            if len(bars):
                yield bars
            if oldest is None or len(rows) < PAGE:
                return  # the symbol's first kline: nothing older
            end_ms = oldest - 1

    def ws_endpoint(self, states: list[SymbolState]) -> str:
        base = self.options["ws_url"]
        path = urlsplit(base).path.rstrip("/")
        # Combined streams ({"stream", "data"} frames) unless the user named an endpoint.
        return base if path.endswith(("/stream", "/ws")) else base + "/stream"

    def subscribe_frames(self, states: list[SymbolState]) -> list[str]:
        kind = self.options["trade_stream"]
        params = [f"{st.venue_symbol.lower()}@{stream}" for st in states
                  for stream in (kind, "bookTicker")]
        return [json.dumps({"method": "SUBSCRIBE", "params": params, "id": 1})]

    def acks_expected(self, states: list[SymbolState]) -> int:
        return 1  # one answer, {"result": null, "id": 1}, for the whole SUBSCRIBE

    def parse(self, frame: str | bytes) -> list[Event]:
        return parse_frame(frame)

    def gap_cursor(self, state: SymbolState) -> tuple[str, int]:
        if state.cursor is not None:
            # The last trade delivered was an aggregate: continue right after it.
            return ("from", state.cursor + 1)
        assert state.last_time is not None
        return ("time", int(state.last_time * 1000))

    async def trade_page(self, http: HttpClient, state: SymbolState, cursor: tuple[str, int],
                         horizon: float | None) -> tuple[list[Trade], tuple[str, int], bool]:
        kind, value = cursor
        if kind == "from":
            params: dict[str, Any] = {"symbol": state.rest_symbol, "fromId": value,
                                      "limit": PAGE}
        else:
            params = {"symbol": state.rest_symbol, "startTime": value,
                      "endTime": value + HOUR_MS - 1, "limit": PAGE}
        rows = await http.get_json("/api/v3/aggTrades", params, weight=W_AGG_TRADES)
        try:
            trades = parse_agg_trades(rows, state.venue_symbol)
        except MalformedFrame as exc:
            raise VenueError(f"binance: unexpected aggTrades answer: {exc}") from None
        if trades:
            nxt = ("from", (trades[-1].cursor or 0) + 1)
            more = len(rows) >= PAGE or (kind == "time" and horizon is not None
                                         and horizon * 1000 > value + HOUR_MS)
            return trades, nxt, more
        if kind == "from":
            return [], cursor, False
        # An hour with no trade at all: look at the next hour if the stream is past it.
        nxt = ("time", value + HOUR_MS)
        return [], nxt, horizon is not None and horizon * 1000 >= value + HOUR_MS
