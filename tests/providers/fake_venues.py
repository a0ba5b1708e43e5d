"""Local stand-ins for Binance and Kraken: HTTP and websocket on one 127.0.0.1 port, speaking
the venues' documented formats, with scripted sessions (drops, stalls, malformed frames,
rate-limit answers) for the provider tests.

A fake market is a deterministic list of prints per symbol (a seeded random walk; some prints
share a millisecond, price and side, so Binance's aggregates cover several of them) with a
top-of-book change after each. Events become "published" (visible over REST) as the websocket
sends them or as a session skips them (the ones a disconnected client misses).

Servers run inside the test's own trio run: h11 for HTTP, wsproto for websockets, chosen by the
request's Upgrade header. Nothing here touches any address but 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)

T0 = 1_723_161_300  # 2024-08-08 23:55 UTC, near the recorded Binance frames; a whole minute


# -- the wire ---------------------------------------------------------------------------------

@dataclass
class HttpRequest:
    path: str
    query: dict[str, str]


@dataclass
class HttpReply:
    status: int = 200
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)


class PeerClosed(Exception):
    pass


class WsPeer:
    """The server side of one websocket connection."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, path: str) -> None:
        self.stream = stream
        self.ws = ws
        self.path = path
        self._incoming: deque[str] = deque()
        self._partial = ""
        self.closed = False
        self.agg_mode = False  # Binance: the client subscribed to @aggTrade

    async def _pump(self) -> None:
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._partial += event.data
                if event.message_finished:
                    self._incoming.append(self._partial)
                    self._partial = ""
            elif isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:  # not an answer to ours
                    try:
                        await self.stream.send_all(self.ws.send(event.response()))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                self.closed = True
                raise PeerClosed

    async def recv(self) -> str:
        while not self._incoming:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                self.closed = True
                raise PeerClosed
            self.ws.receive_data(data)
            await self._pump()
        return self._incoming.popleft()

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def close(self, code: int = 1001, reason: str = "going away") -> None:
        """Close with a close frame, as a venue restarting a server does."""
        await self.stream.send_all(self.ws.send(CloseConnection(code=code, reason=reason)))
        await self.drain()

    async def drop(self) -> None:
        """Drop the TCP connection without a close frame."""
        await trio.aclose_forcefully(self.stream)
        self.closed = True

    async def drain(self) -> None:
        """Answer pings and the close handshake until the client goes away."""
        try:
            while True:
                await self.recv()
        except (PeerClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.aclose_forcefully(self.stream)


HttpHandler = Callable[[HttpRequest], Awaitable[HttpReply]]
WsHandler = Callable[[WsPeer], Awaitable[None]]


async def _serve_http(stream: trio.abc.Stream, head: bytes, handler: HttpHandler) -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    while True:
        request = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(1 << 16))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return
        assert request is not None
        parts = urlsplit(request.target.decode())
        reply = await handler(HttpRequest(parts.path, dict(parse_qsl(parts.query))))
        body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   *reply.headers]
        await stream.send_all(conn.send(h11.Response(status_code=reply.status,
                                                     headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        if conn.our_state is h11.MUST_CLOSE:
            return
        conn.start_next_cycle()


async def _serve_ws(stream: trio.abc.Stream, head: bytes, handler: WsHandler) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    ws.receive_data(head)
    path = "/"
    for event in ws.events():
        if isinstance(event, Request):
            path = event.target
            await stream.send_all(ws.send(AcceptConnection()))
    peer = WsPeer(stream, ws, path)
    try:
        await handler(peer)
    except (PeerClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def serve(http: HttpHandler, ws: WsHandler):
    """Serve HTTP and websockets on one 127.0.0.1 port; yield (rest_url, ws_url)."""

    async def connection(stream: trio.SocketStream) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(1 << 16)
                if not data:
                    return
                head += data
            if b"upgrade: websocket" in head.split(b"\r\n\r\n")[0].lower():
                await _serve_ws(stream, head, ws)
            else:
                await _serve_http(stream, head, http)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, connection, listeners)
        try:
            yield f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
        finally:
            nursery.cancel_scope.cancel()


# -- a fake market ----------------------------------------------------------------------------

@dataclass
class Print:
    tid: int
    price: float
    qty: float
    ms: int
    maker: bool  # the buyer was the maker (a sell took liquidity)


@dataclass
class Agg:
    aid: int
    first: int
    last: int
    price: float
    qty: float
    ms: int
    maker: bool


@dataclass
class BookLevel:
    seq: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float
    ms: int


@dataclass
class MarketEvent:
    symbol: str
    print: Print | None = None
    book: BookLevel | None = None


class Market:
    """Prints and book changes for some symbols, interleaved in time, 4 prints a second each."""

    def __init__(self, symbols: dict[str, float], n: int = 200, seed: int = 7,
                 t0: int = T0, first_id: int = 5_000) -> None:
        rng = random.Random(seed)
        self.prints: dict[str, list[Print]] = {}
        self.books: dict[str, list[BookLevel]] = {}
        per_symbol: list[list[MarketEvent]] = []
        for k, (sym, price) in enumerate(symbols.items()):
            prints, books, events = [], [], []
            tid, seq = first_id + 1000 * k, 90_000 + 1000 * k
            ms = t0 * 1000 + 100 + 37 * k
            for i in range(n):
                if i % 7 == 3 and prints:
                    # Another print of the same taker order: same time, price and side.
                    prev = prints[-1]
                    p = Print(tid, prev.price, round(rng.uniform(0.001, 0.05), 5), prev.ms,
                              prev.maker)
                else:
                    ms += 250
                    price = round(price * math.exp(rng.gauss(0, 2e-4)), 2)
                    p = Print(tid, price, round(rng.uniform(0.001, 0.2), 5), ms,
                              rng.random() < 0.5)
                prints.append(p)
                tid += 1
                seq += 1
                level = BookLevel(seq, round(p.price - 0.01, 2), round(rng.uniform(0.1, 3), 4),
                                  round(p.price + 0.01, 2), round(rng.uniform(0.1, 3), 4),
                                  p.ms)
                books.append(level)
                events += [MarketEvent(sym, print=p), MarketEvent(sym, book=level)]
            self.prints[sym] = prints
            self.books[sym] = books
            per_symbol.append(events)
        # Interleave by time (stable: a print before its book change).
        merged = [e for events in per_symbol for e in events]
        merged.sort(key=lambda e: e.print.ms if e.print else e.book.ms)
        self.events = merged
        self.published = 0
        self.aggs = {sym: _aggregate(ps, 700_000 + 10_000 * k)
                     for k, (sym, ps) in enumerate(self.prints.items())}

    def publish(self, upto: int) -> None:
        self.published = max(self.published, min(upto, len(self.events)))

    def published_prints(self, sym: str) -> list[Print]:
        done = {id(e.print) for e in self.events[: self.published] if e.print}
        return [p for p in self.prints[sym] if id(p) in done]

    def published_aggs(self, sym: str) -> list[Agg]:
        last = max((p.tid for p in self.published_prints(sym)), default=-1)
        # An aggregate is visible once all its prints are (the venue publishes it whole).
        return [a for a in self.aggs[sym] if a.last <= last]

    def book_now(self, sym: str) -> BookLevel:
        levels = [e.book for e in self.events[: self.published] if e.book and e.symbol == sym]
        return levels[-1] if levels else self.books[sym][0]


def _aggregate(prints: list[Print], first_aid: int) -> list[Agg]:
    out: list[Agg] = []
    for p in prints:
        prev = out[-1] if out else None
        if prev and prev.ms == p.ms and prev.price == p.price and prev.maker == p.maker:
            prev.last = p.tid
            prev.qty = round(prev.qty + p.qty, 8)
        else:
            out.append(Agg(first_aid + len(out), p.tid, p.tid, p.price, p.qty, p.ms, p.maker))
    return out


@dataclass
class Session:
    """What one websocket connection of the fake venue does once subscribed.

    `skip` events happen first without being sent (missed while the client was away); then
    `send` events are streamed (None: all that remain), with `inject[k]` raw frames sent before
    the k-th; `resend` repeats that many already-sent events first (a venue replaying on
    resubscribe). Then `then`: "hold" (stay open), "drop" (TCP closed without a close frame),
    "close" (close frame 1001) or "stall" (stay open, send nothing, answer nothing).
    """

    send: int | None = None
    then: str = "hold"
    skip: int = 0
    resend: int = 0
    inject: dict[int, list[str]] = field(default_factory=dict)


def event_time(event: MarketEvent) -> float:
    return (event.print.ms if event.print else event.book.ms) / 1000


class FakeVenue:
    """Shared plumbing: the market, scripted sessions, queued HTTP failures, request log.

    With a `clock` (an engine Clock), events are paced: each is sent when the clock reaches its
    time, and a session begins by publishing, unsent, every event whose time has passed (the
    ones a disconnected client missed).
    """

    def __init__(self, market: Market, clock: Any = None) -> None:
        self.market = market
        self.clock = clock
        self.sessions: deque[Session] = deque()
        self.failures: deque[tuple[str, HttpReply]] = deque()
        self.requests: list[HttpRequest] = []
        self.subscriptions: list[Any] = []
        self.connections = 0
        self.sent = 0  # market events sent so far over any connection
        self.session_done = trio.Event()
        self.all_sent = trio.Event()

    def advance(self, n: int) -> None:
        """Let `n` events happen before any client connects (history the REST side knows)."""
        self.sent = min(len(self.market.events), self.sent + n)
        self.market.publish(self.sent)

    def fail(self, path: str, reply: HttpReply, times: int = 1) -> None:
        """Answer the next `times` requests to `path` with `reply` instead."""
        for _ in range(times):
            self.failures.append((path, reply))

    async def http(self, req: HttpRequest) -> HttpReply:
        self.requests.append(req)
        for k, (path, reply) in enumerate(self.failures):
            if req.path == path:
                del self.failures[k]
                return reply
        return await self.route(req)

    async def route(self, req: HttpRequest) -> HttpReply:
        raise NotImplementedError

    async def ws(self, peer: WsPeer) -> None:
        self.connections += 1
        await self.handshake(peer)
        session = self.sessions.popleft() if self.sessions else Session()
        market = self.market
        skip = session.skip
        if self.clock is not None:
            now = self.clock.now()
            while self.sent + skip < len(market.events) and \
                    event_time(market.events[self.sent + skip]) <= now:
                skip += 1
        market.publish(self.sent + skip)
        start = self.sent + skip
        for event in market.events[max(0, self.sent - session.resend): self.sent]:
            await self.send_event(peer, event)
        end = len(market.events) if session.send is None else min(len(market.events),
                                                                  start + session.send)
        for k, event in enumerate(market.events[start:end]):
            for raw in session.inject.get(k, []):
                await peer.send(raw)
            if self.clock is not None:
                await self.clock.sleep_until(event_time(event))
            market.publish(start + k + 1)
            self.sent = start + k + 1
            await self.send_event(peer, event)
        for raw in session.inject.get(end - start, []):
            await peer.send(raw)
        self.sent = max(self.sent, end)
        if self.sent >= len(market.events):
            self.all_sent.set()
        self.session_done.set()
        self.session_done = trio.Event()
        if session.then == "drop":
            await peer.drop()
        elif session.then == "close":
            await peer.close()
        elif session.then == "stall":
            await trio.sleep_forever()
        else:
            await self.hold(peer)

    async def hold(self, peer: WsPeer) -> None:
        """Stay open, answering pings and the close handshake, until the client leaves."""
        await peer.drain()

    async def handshake(self, peer: WsPeer) -> None:
        raise NotImplementedError

    async def send_event(self, peer: WsPeer, event: MarketEvent) -> None:
        raise NotImplementedError

    @asynccontextmanager
    async def running(self):
        async with serve(self.http, self.ws) as urls:
            yield urls


# -- Binance ----------------------------------------------------------------------------------

def _f(x: float) -> str:
    return f"{x:.8f}"


class FakeBinance(FakeVenue):
    """Binance spot: /api/v3 REST (exchangeInfo, time, klines, aggTrades, ticker/bookTicker)
    and combined streams at /stream with SUBSCRIBE (binance-spot-api-docs formats)."""

    def __init__(self, market: Market | None = None, history_minutes: int = 2500,
                 clock: Any = None) -> None:
        super().__init__(market or Market({"BTCUSDT": 61_800.0, "ETHUSDT": 2_650.0}), clock)
        self.history_minutes = history_minutes
        self.weight = 0  # request weight used this minute
        self._minute = 0
        self.listed = {"BTCUSDT": ("BTC", "USDT", "0.01", "0.00001"),
                       "ETHUSDT": ("ETH", "USDT", "0.01", "0.0001"),
                       "BNBBTC": ("BNB", "BTC", "0.000001", "0.001"),
                       "LUNABTC": ("LUNA", "BTC", "0.00000001", "1")}

    def now_ms(self) -> int:
        done = self.market.events[: self.market.published]
        return max((round(event_time(e) * 1000) for e in done), default=T0 * 1000) + 1

    def _reply(self, body: Any, weight: int, status: int = 200) -> HttpReply:
        minute = int(trio.current_time() // 60)
        if minute != self._minute:
            self._minute, self.weight = minute, 0  # the venue's counter is per minute
        self.weight += weight
        return HttpReply(status, body, [("X-MBX-USED-WEIGHT-1M", str(self.weight))])

    def _bad_symbol(self) -> HttpReply:
        return self._reply({"code": -1121, "msg": "Invalid symbol."}, 1, 400)

    async def route(self, req: HttpRequest) -> HttpReply:
        q = req.query
        if req.path == "/api/v3/exchangeInfo":
            return self._reply(self.exchange_info(), 20)
        if req.path == "/api/v3/time":
            return self._reply({"serverTime": self.now_ms()}, 1)
        if req.path == "/api/v3/ticker/bookTicker":
            names = json.loads(q["symbols"]) if "symbols" in q else [q.get("symbol")]
            if any(n not in self.market.prints for n in names):
                return self._bad_symbol()
            rows = []
            for n in names:
                b = self.market.book_now(n)
                rows.append({"symbol": n, "bidPrice": _f(b.bid), "bidQty": _f(b.bid_qty),
                             "askPrice": _f(b.ask), "askQty": _f(b.ask_qty)})
            return self._reply(rows if "symbols" in q else rows[0], 4 if "symbols" in q else 2)
        if req.path == "/api/v3/aggTrades":
            return self.agg_trades(q)
        if req.path == "/api/v3/klines":
            return self.klines(q)
        return HttpReply(404, {"code": -1000, "msg": f"no route {req.path}"})

    def exchange_info(self) -> dict:
        symbols = []
        for name, (base, quote, tick, step) in self.listed.items():
            symbols.append({
                "symbol": name, "status": "BREAK" if name == "LUNABTC" else "TRADING",
                "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
                "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00",
                     "tickSize": tick},
                    {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000",
                     "stepSize": step},
                    {"filterType": "NOTIONAL", "minNotional": "5.00000000",
                     "applyMinToMarket": True, "maxNotional": "9000000.00000000",
                     "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
                "permissions": [], "permissionSets": [["SPOT"]],
            })
        return {"timezone": "UTC", "serverTime": self.now_ms(),
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                     "limit": 6000},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                     "limit": 100},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                     "limit": 61000}],
                "exchangeFilters": [], "symbols": symbols}

    def agg_trades(self, q: dict[str, str]) -> HttpReply:
        sym = q.get("symbol", "")
        if sym not in self.market.prints:
            return self._bad_symbol()
        limit = min(int(q.get("limit", 500)), 1000)
        aggs = self.market.published_aggs(sym)
        if "fromId" in q:
            rows = [a for a in aggs if a.aid >= int(q["fromId"])][:limit]
        elif "startTime" in q:
            start, end = int(q["startTime"]), int(q.get("endTime", 2**62))
            if "endTime" in q and end - start >= 3_600_000:
                return self._reply({"code": -1127, "msg": "More than 1 hours between startTime "
                                    "and endTime."}, 4, 400)
            rows = [a for a in aggs if start <= a.ms <= end][:limit]
        else:
            rows = aggs[-limit:]
        return self._reply([{"a": a.aid, "p": _f(a.price), "q": _f(a.qty), "f": a.first,
                             "l": a.last, "T": a.ms, "m": a.maker, "M": True} for a in rows], 4)

    def klines(self, q: dict[str, str]) -> HttpReply:
        sym = q.get("symbol", "")
        if sym not in self.market.prints:
            return self._bad_symbol()
        step = 60_000
        limit = min(int(q.get("limit", 500)), 1000)
        now = T0 * 1000
        newest = now // step * step  # the forming kline
        first = newest - self.history_minutes * step  # the listing's first kline
        end = min(int(q.get("endTime", newest)), newest)
        top = end // step * step
        opens = [t for t in range(max(first, top - (limit - 1) * step), top + 1, step)]
        base = self.market.prints[sym][0].price
        rows = []
        for t in opens:
            k = (t - first) // step
            o = round(base * (1 + 0.001 * math.sin(k / 7)), 2)
            c = round(base * (1 + 0.001 * math.sin((k + 1) / 7)), 2)
            h, low = round(max(o, c) + 1.5, 2), round(min(o, c) - 1.5, 2)
            v = 1.0 + (k % 5)
            rows.append([t, _f(o), _f(h), _f(low), _f(c), _f(v), t + step - 1,
                         _f(v * (o + c) / 2), 10 + k % 3, _f(v / 2), _f(v * (o + c) / 4), "0"])
        return self._reply(rows, 2)

    async def handshake(self, peer: WsPeer) -> None:
        request = json.loads(await peer.recv())
        self.subscriptions.append(request)
        peer.agg_mode = any(p.endswith("@aggTrade") for p in request["params"])
        await peer.send(json.dumps({"result": None, "id": request["id"]}))

    async def send_event(self, peer: WsPeer, event: MarketEvent) -> None:
        sym = event.symbol
        if event.print is not None and peer.agg_mode:
            p = event.print
            agg = next((a for a in self.market.aggs[sym] if a.last == p.tid), None)
            if agg is None:
                return  # the aggregate goes out with its last print
            data = {"e": "aggTrade", "E": agg.ms + 1, "s": sym, "a": agg.aid,
                    "p": _f(agg.price), "q": _f(agg.qty), "f": agg.first, "l": agg.last,
                    "T": agg.ms, "m": agg.maker, "M": True}
            stream = f"{sym.lower()}@aggTrade"
        elif event.print is not None:
            p = event.print
            data = {"e": "trade", "E": p.ms + 1, "s": sym, "t": p.tid, "p": _f(p.price),
                    "q": _f(p.qty), "T": p.ms, "m": p.maker, "M": True}
            stream = f"{sym.lower()}@trade"
        else:
            b = event.book
            data = {"u": b.seq, "s": sym, "b": _f(b.bid), "B": _f(b.bid_qty), "a": _f(b.ask),
                    "A": _f(b.ask_qty)}
            stream = f"{sym.lower()}@bookTicker"
        await peer.send(json.dumps({"stream": stream, "data": data}))


# -- Kraken -----------------------------------------------------------------------------------

def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeKraken(FakeVenue):
    """Kraken spot: /0/public REST (AssetPairs, Ticker, Trades, OHLC) and websocket v2 with
    status, subscribe answers, ticker snapshot/updates, trade updates and heartbeats (Kraken's
    documented formats)."""

    # v2 name -> (REST pair, altname, v1 wsname, tick_size, lot_decimals, ordermin)
    PAIRS = {"BTC/USD": ("XXBTZUSD", "XBTUSD", "XBT/USD", "0.1", 8, "0.0001"),
             "ETH/USD": ("XETHZUSD", "ETHUSD", "ETH/USD", "0.01", 8, "0.002"),
             "DOGE/USD": ("XDGUSD", "XDGUSD", "XDG/USD", "0.0000001", 8, "50")}

    def __init__(self, market: Market | None = None, heartbeat: float = 1.0,
                 clock: Any = None) -> None:
        super().__init__(market or Market({"BTC/USD": 61_800.0, "ETH/USD": 2_650.0}), clock)
        self.heartbeat = heartbeat
        self.reject_next = 0  # connections whose subscriptions are all refused
        self.by_rest = {}
        for v2, (pair, alt, ws, *_rest) in self.PAIRS.items():
            for name in (pair, alt, ws):
                self.by_rest[name] = v2

    @staticmethod
    def _ok(result: Any) -> HttpReply:
        return HttpReply(200, {"error": [], "result": result})

    @staticmethod
    def _err(*errors: str) -> HttpReply:
        return HttpReply(200, {"error": list(errors)})

    async def route(self, req: HttpRequest) -> HttpReply:
        q = req.query
        if req.path == "/0/public/AssetPairs":
            return self._ok(self.asset_pairs())
        pairs = [p for p in q.get("pair", "").split(",") if p]
        if not pairs or any(p not in self.by_rest for p in pairs):
            return self._err("EQuery:Unknown asset pair")
        v2s = [self.by_rest[p] for p in pairs]
        if req.path == "/0/public/Ticker":
            out = {}
            for v2 in v2s:
                b = self.market.book_now(v2)
                last = self.market.published_prints(v2) or self.market.prints[v2][:1]
                out[self.PAIRS[v2][0]] = {
                    "a": [f"{b.ask:.5f}", "1", f"{b.ask_qty:.8f}"],
                    "b": [f"{b.bid:.5f}", "1", f"{b.bid_qty:.8f}"],
                    "c": [f"{last[-1].price:.5f}", f"{last[-1].qty:.8f}"],
                    "v": ["10.0", "20.0"], "p": [f"{b.bid:.5f}", f"{b.bid:.5f}"],
                    "t": [100, 200], "l": [f"{b.bid - 50:.5f}"] * 2,
                    "h": [f"{b.ask + 50:.5f}"] * 2, "o": f"{b.bid:.5f}"}
            return self._ok(out)
        v2 = v2s[0]
        if req.path == "/0/public/Trades":
            return self._ok(self.trades(v2, q.get("since")))
        if req.path == "/0/public/OHLC":
            return self._ok(self.ohlc(v2, int(q.get("interval", 1))))
        return HttpReply(404, {"error": [f"EGeneral:Unknown method {req.path}"]})

    def asset_pairs(self) -> dict:
        out = {}
        for pair, alt, ws, tick, lots, ordermin in self.PAIRS.values():
            base, quote = ws.split("/")
            out[pair] = {"altname": alt, "wsname": ws, "aclass_base": "currency",
                         "base": "X" + base if len(base) == 3 else base,
                         "aclass_quote": "currency", "quote": "Z" + quote, "lot": "unit",
                         "cost_decimals": 5, "pair_decimals": len(tick.split(".")[1]),
                         "lot_decimals": lots, "lot_multiplier": 1, "fees": [[0, 0.26]],
                         "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40,
                         "ordermin": ordermin, "costmin": "0.5", "tick_size": tick,
                         "status": "online"}
        out["XBTUSD.d"] = dict(out["XXBTZUSD"], altname="XBTUSD.d")
        return out

    def trades(self, v2: str, since: str | None) -> dict:
        prints = self.market.published_prints(v2)
        if since is None:
            rows = prints[-1000:]
        else:
            cut = float(since)
            ns = cut if cut > 1e12 else cut * 1e9
            rows = [p for p in prints if p.ms * 1_000_000 > ns][:1000]
        last = str(rows[-1].ms * 1_000_000) if rows else str(since or 0)
        return {self.PAIRS[v2][0]: [[f"{p.price:.5f}", f"{p.qty:.8f}", p.ms / 1000,
                                     "s" if p.maker else "b", "m", "", p.tid] for p in rows],
                "last": last}

    def ohlc(self, v2: str, interval: int) -> dict:
        step = 60 * interval
        now = T0
        newest = now // step * step  # the current, not-yet-committed bar
        base = self.market.prints[v2][0].price
        rows = []
        for k in range(720):
            t = newest - (719 - k) * step
            o = round(base * (1 + 0.001 * math.sin(k / 5)), 1)
            c = round(base * (1 + 0.001 * math.sin((k + 1) / 5)), 1)
            h, low = round(max(o, c) + 2, 1), round(min(o, c) - 2, 1)
            rows.append([t, f"{o:.1f}", f"{h:.1f}", f"{low:.1f}", f"{c:.1f}",
                         f"{(o + c) / 2:.1f}", f"{1 + k % 4:.8f}", 5 + k % 3])
        return {self.PAIRS[v2][0]: rows, "last": newest}

    async def handshake(self, peer: WsPeer) -> None:
        await peer.send(json.dumps({"channel": "status", "type": "update", "data": [{
            "api_version": "v2", "connection_id": 4242 + self.connections, "system": "online",
            "version": "2.0.9"}]}))
        stamp = _rfc3339(T0 * 1000)
        refuse = self.reject_next > 0
        self.reject_next -= refuse
        for _ in range(2):
            request = json.loads(await peer.recv())
            self.subscriptions.append(request)
            params = request["params"]
            for sym in params["symbol"]:
                if sym not in self.market.prints or refuse:
                    reason = "Exchange is in maintenance mode" if refuse else \
                        f"Currency pair not supported {sym}"
                    await peer.send(json.dumps({
                        "error": reason, "method": "subscribe",
                        "success": False, "symbol": sym, "time_in": stamp, "time_out": stamp,
                        "req_id": request.get("req_id")}))
                    continue
                await peer.send(json.dumps({
                    "method": "subscribe", "result": {
                        "channel": params["channel"], "snapshot": params.get("snapshot", True),
                        "symbol": sym}, "success": True, "time_in": stamp, "time_out": stamp,
                    "req_id": request.get("req_id")}))
                if params["channel"] == "ticker":
                    await peer.send(json.dumps({"channel": "ticker", "type": "snapshot",
                                                "data": [self._ticker(sym)]}))

    def _ticker(self, sym: str) -> dict:
        b = self.market.book_now(sym)
        last = self.market.published_prints(sym) or self.market.prints[sym][:1]
        return {"symbol": sym, "bid": b.bid, "bid_qty": b.bid_qty, "ask": b.ask,
                "ask_qty": b.ask_qty, "last": last[-1].price, "volume": 123.4,
                "vwap": round((b.bid + b.ask) / 2, 2), "low": b.bid - 50, "high": b.ask + 50,
                "change": 1.5, "change_pct": 0.01}

    async def send_event(self, peer: WsPeer, event: MarketEvent) -> None:
        if event.print is not None:
            p = event.print
            await peer.send(json.dumps({"channel": "trade", "type": "update", "data": [{
                "symbol": event.symbol, "side": "sell" if p.maker else "buy",
                "price": p.price, "qty": p.qty, "ord_type": "market", "trade_id": p.tid,
                "timestamp": _rfc3339(p.ms)}]}))
        else:
            await peer.send(json.dumps({"channel": "ticker", "type": "update",
                                        "data": [self._ticker(event.symbol)]}))

    async def hold(self, peer: WsPeer) -> None:
        """Stay open as Kraken does: a heartbeat every second, answering the client."""
        async with trio.open_nursery() as nursery:

            async def beat() -> None:
                while True:
                    await trio.sleep(self.heartbeat)
                    await peer.send(json.dumps({"channel": "heartbeat"}))

            nursery.start_soon(beat)
            await peer.drain()
            nursery.cancel_scope.cancel()


# -- test helpers -----------------------------------------------------------------------------

async def collect(module: Any, symbols: list[str], stop: Callable[[list[dict]], bool],
                  *, timeout: float = 600.0, duration: float | None = None
                  ) -> tuple[dict, dict, list[dict], trio.Event]:
    """Run `module.stream_quotes` for `symbols` until `stop(messages)` (or for `duration`
    seconds, if given); return init_msgs, first_quotes, the messages and the feed_is_live
    event. Cancels the stream on return."""
    from engine.shm import ShmArray, tick_dtype

    send, recv = trio.open_memory_channel(math.inf)
    live = trio.Event()
    msgs: list[dict] = []
    with ShmArray.create(tick_dtype, 64, start=0) as shm:
        async with trio.open_nursery() as nursery:
            init, first = await nursery.start(module.stream_quotes, send, symbols, shm, live)
            if duration is not None:
                with trio.move_on_after(duration):
                    while True:
                        msgs.append(await recv.receive())
            with trio.fail_after(timeout):
                while not stop(msgs):
                    msgs.append(await recv.receive())
            nursery.cancel_scope.cancel()
    return init, first, msgs, live


def trade_ticks(msgs: list[dict], name: str) -> list[tuple[int, int, dict, dict]]:
    """(first id, last id, tick, message) of every trade tick sent for `name`, in order."""
    out = []
    for msg in msgs:
        if msg.get("symbol") != name:
            continue
        for tick in msg.get("ticks", []):
            if tick["type"] == "trade":
                n = tick.get("trades", 1)
                out.append((tick["trade_id"] - n + 1, tick["trade_id"], tick, msg))
    return out


def assert_each_print_once(market: Market, venue_symbol: str, msgs: list[dict], name: str,
                           after: int | None = None) -> list[tuple[int, int, dict, dict]]:
    """Assert the trade ticks for `name` cover the market's prints exactly once, in order,
    with their total size and non-decreasing times (all prints, or those after id `after`)."""
    ticks = trade_ticks(msgs, name)
    ids = [i for first, last, _, _ in ticks for i in range(first, last + 1)]
    prints = [p for p in market.prints[venue_symbol] if after is None or p.tid > after]
    assert ids == [p.tid for p in prints], f"{name}: prints delivered out of order or twice"
    size = sum(t["size"] for _, _, t, _ in ticks)
    assert size == pytest.approx(sum(p.qty for p in prints), rel=1e-9)
    times = [t["time"] for _, _, t, _ in ticks]
    assert times == sorted(times), f"{name}: trade times go backwards"
    return ticks
