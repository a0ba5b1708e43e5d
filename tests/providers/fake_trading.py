"""A loopback Binance spot venue that trades: signed REST order entry and the WebSocket API user
data stream, beside the market-data fake of fake_venues.py (same port, same formats).

Every private request is checked as Binance documents it: the X-MBX-APIKEY header, the
signature over the exact query string plus body (HMAC-SHA256 hex, or Ed25519 base64 against the
account's public key), and the timestamp against the venue's own clock and recvWindow (-1021).
Orders match against a scripted top of book (`set_book`) and against prints a test makes
(`trade`), move balances, charge a fee in the quote asset, and are reported on the user data
stream as executionReport events. Faults on demand: `lose_answers` (the order is processed and
the connection dropped before the answer), queued HTTP replies (429/418), a clock `skew`, a
stream drop (`drop_streams`), and a `silent` stream (events not sent).

Nothing here listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from tests.providers.fake_venues import FakeBinance, HttpReply, HttpRequest, WsPeer, _serve_ws

API_KEY = "fakeKey0123456789abcdefABCDEF"
SECRET = "fakeSecret0123456789abcdefABCDEFfakeSecret0123456789"


class DropConnection(Exception):
    """Raised by a handler: close the connection without an answer."""


@dataclass
class RawRequest:
    method: str
    path: str
    query: str
    body: str
    headers: dict[str, str]


@asynccontextmanager
async def serve_raw(http, ws):
    """Serve HTTP (with method, headers and body) and websockets on one 127.0.0.1 port."""

    async def handle_http(stream: trio.abc.Stream, head: bytes) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        while True:
            request, body = None, b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(1 << 16))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            parts = urlsplit(request.target.decode())
            raw = RawRequest(request.method.decode(), parts.path, parts.query, body.decode(),
                             {k.decode().lower(): v.decode() for k, v in request.headers})
            try:
                reply = await http(raw)
            except DropConnection:
                return
            data = json.dumps(reply.body).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                       *reply.headers]
            await stream.send_all(conn.send(h11.Response(status_code=reply.status,
                                                         headers=headers)))
            await stream.send_all(conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

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
                await handle_http(stream, head)
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


@dataclass
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str
    qty: float
    price: float
    stop: float
    tif: str
    status: str = "NEW"
    filled: float = 0.0
    quote_filled: float = 0.0
    time: int = 0


@dataclass
class Fill:
    trade_id: int
    order: Order
    price: float
    qty: float
    fee: float
    maker: bool
    time: int


@dataclass
class Book:
    bid: float
    ask: float
    bid_qty: float = 10.0
    ask_qty: float = 10.0


@dataclass
class FakeExchange:
    """What every fake trading venue shares: balances, books, orders matched against the top of
    book and against prints, fees in the quote asset, the private-stream peers and the faults
    (`lose_answers`, `silent`, `skew`, queued `replies`). A venue subclass adds its auth,
    endpoints, formats and `_report` (one private-stream event). Order fields keep Binance's
    spellings (BUY/SELL, LIMIT/MARKET, NEW/PARTIALLY_FILLED/FILLED/CANCELED/EXPIRED) inside;
    a subclass shows them in its venue's words. `clock` is the engine Clock both sides read."""

    clock: Any
    fee_rate: float = 0.001
    skew: float = 0.0  # the venue's clock minus the engine's, seconds
    lose_answers: int = 0
    silent: bool = False
    orders: dict[int, Order] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    requests: list[RawRequest] = field(default_factory=list)
    replies: deque = field(default_factory=deque)  # (method, path, HttpReply) answered instead
    peers: list = field(default_factory=list)
    subscribed: trio.Event = field(default_factory=trio.Event)
    _next_id: int = 1000

    def server_ms(self) -> int:
        return int((self.clock.now() + self.skew) * 1000)

    def assets(self, symbol: str) -> tuple[str, str]:
        """(base, quote) asset of a symbol, as the venue's balances name them."""
        raise NotImplementedError

    def queued_reply(self, req: RawRequest) -> HttpReply | None:
        for k, (method, path, reply) in enumerate(self.replies):
            if req.method == method and req.path == path:
                del self.replies[k]
                return reply
        return None

    def free(self, asset: str) -> float:
        return self.balances.get(asset, 0.0) - self.locked(asset)

    def locked(self, asset: str) -> float:
        out = 0.0
        for o in self.orders.values():
            if o.status not in ("NEW", "PARTIALLY_FILLED"):
                continue
            base, quote = self.assets(o.symbol)
            if o.side == "BUY" and asset == quote:
                out += (o.qty - o.filled) * (o.price or self.books[o.symbol].ask)
            elif o.side == "SELL" and asset == base:
                out += o.qty - o.filled
        return out

    def working(self, client_id: str) -> Order | None:
        return next((o for o in self.orders.values() if o.client_id == client_id
                     and o.status in ("NEW", "PARTIALLY_FILLED")), None)

    def affordable(self, symbol: str, side: str, qty: float, ref: float) -> bool:
        base, quote = self.assets(symbol)
        need = qty * ref if side == "BUY" else qty
        return self.free(quote if side == "BUY" else base) >= need - 1e-9

    async def open_order(self, order: Order) -> None:
        """Book a new order, report it, match it as a taker, and drop the connection instead
        of answering when `lose_answers` says so."""
        self.orders[order.order_id] = order
        await self._report(order, "NEW")
        await self.match(order, taker=True)
        if self.lose_answers:
            self.lose_answers -= 1
            raise DropConnection

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- matching ------------------------------------------------------------------------------

    async def match(self, order: Order, *, taker: bool) -> None:
        book = self.books[order.symbol]
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            return
        if order.side == "BUY":
            crosses = order.type == "MARKET" or order.price >= book.ask
            px, avail = book.ask, book.ask_qty
        else:
            crosses = order.type == "MARKET" or order.price <= book.bid
            px, avail = book.bid, book.bid_qty
        if crosses and avail > 0:
            qty = min(order.qty - order.filled, avail)
            await self._fill(order, px, qty, maker=not taker)
            if order.side == "BUY":
                book.ask_qty -= qty
            else:
                book.bid_qty -= qty
        if order.status in ("NEW", "PARTIALLY_FILLED") and (
                order.type == "MARKET" or order.tif in ("IOC", "FOK")):
            order.status = "EXPIRED"
            await self._report(order, "EXPIRED")

    async def _fill(self, order: Order, price: float, qty: float, *, maker: bool) -> None:
        base, quote = self.assets(order.symbol)
        fee = qty * price * self.fee_rate
        sign = 1 if order.side == "BUY" else -1
        self.balances[base] = self.balances.get(base, 0.0) + sign * qty
        self.balances[quote] = self.balances.get(quote, 0.0) - sign * qty * price - fee
        order.filled += qty
        order.quote_filled += qty * price
        order.status = "FILLED" if order.qty - order.filled < 1e-12 else "PARTIALLY_FILLED"
        fill = Fill(self.next_id(), order, price, qty, fee, maker, self.server_ms())
        self.fills.append(fill)
        await self._report(order, "TRADE", fill)

    async def set_book(self, symbol: str, bid: float, ask: float, qty: float = 10.0) -> None:
        """Move the top of book; resting orders it crosses fill (as makers)."""
        self.books[symbol] = Book(bid, ask, qty, qty)
        for o in list(self.orders.values()):
            if o.symbol == symbol and o.type != "MARKET":
                await self.match(o, taker=False)

    async def trade(self, symbol: str, price: float, qty: float) -> None:
        """A print at `price` of `qty`: resting orders at that price or better fill, oldest
        first, up to `qty` in total (a partial fill when it is less than they want)."""
        left = qty
        for o in list(self.orders.values()):
            if left <= 0 or o.symbol != symbol or o.status not in ("NEW", "PARTIALLY_FILLED"):
                continue
            if (o.side == "BUY" and o.price >= price) or (o.side == "SELL" and o.price <= price):
                take = min(left, o.qty - o.filled)
                await self._fill(o, o.price, take, maker=True)
                left -= take

    async def broadcast(self, frame: str) -> None:
        """Send `frame` to every subscribed private-stream peer (unless `silent`)."""
        if self.silent:
            return
        for peer, lock in list(self.peers):
            try:
                async with lock:
                    await peer.send(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.peers = [(p, lk) for p, lk in self.peers if p is not peer]

    async def _report(self, o: Order, execution: str, fill: Fill | None = None) -> None:
        raise NotImplementedError

    async def drop_streams(self) -> None:
        """Drop every private stream connection (no close frame)."""
        peers, self.peers = self.peers, []
        self.subscribed = trio.Event()
        for peer, _ in peers:
            await peer.drop()

    async def http(self, req: RawRequest) -> HttpReply:
        raise NotImplementedError

    async def ws(self, peer: WsPeer) -> None:
        raise NotImplementedError

    @asynccontextmanager
    async def running(self):
        async with serve_raw(self.http, self.ws) as urls:
            yield urls

    def open_count(self) -> int:
        return sum(o.status in ("NEW", "PARTIALLY_FILLED") for o in self.orders.values())


@dataclass
class FakeBinanceTrading(FakeExchange):
    """See the module docstring."""

    secret: str = SECRET
    public_key: Any = None  # an Ed25519 public key: verify Ed25519 signatures instead of HMAC
    balances: dict[str, float] = field(default_factory=lambda: {"USDT": 10_000.0, "BTC": 0.0,
                                                                 "ETH": 0.0})
    md: FakeBinance = field(default_factory=FakeBinance)
    books: dict[str, Book] = field(default_factory=lambda: {"BTCUSDT": Book(61_800.0, 61_800.5),
                                                            "ETHUSDT": Book(2650.0, 2650.1)})

    def assets(self, symbol: str) -> tuple[str, str]:
        return symbol[:-4], symbol[-4:]

    # -- time and auth -------------------------------------------------------------------------

    def _verify(self, payload: str, signature: str) -> bool:
        if self.public_key is not None:
            try:
                self.public_key.verify(base64.b64decode(signature), payload.encode())
            except Exception:  # noqa: BLE001 - any failure is a bad signature
                return False
            return True
        good = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(good, signature.lower())

    @staticmethod
    def _err(status: int, code: int, msg: str) -> HttpReply:
        return HttpReply(status, {"code": code, "msg": msg})

    def _auth(self, req: RawRequest) -> tuple[dict[str, str], HttpReply | None]:
        if req.headers.get("x-mbx-apikey") != API_KEY:
            return {}, self._err(401, -2015, "Invalid API-key, IP, or permissions for action.")
        total = req.query + req.body  # Binance: totalParams = query string + request body
        payload, sep, sig = total.rpartition("&signature=")
        if not sep:
            return {}, self._err(400, -1102, "Mandatory parameter 'signature' was not sent.")
        params = dict(parse_qsl(payload, keep_blank_values=True))
        if not self._verify(payload, dict(parse_qsl("s=" + sig))["s"]):
            return {}, self._err(400, -1022, "Signature for this request is not valid.")
        ts, window = int(params.get("timestamp", 0)), float(params.get("recvWindow", 5000))
        now = self.server_ms()
        if not (ts < now + 1000 and now - ts <= window):
            return {}, self._err(400, -1021, "Timestamp for this request is outside of the "
                                             "recvWindow.")
        return params, None

    # -- HTTP ----------------------------------------------------------------------------------

    async def http(self, req: RawRequest) -> HttpReply:
        self.requests.append(req)
        reply = self.queued_reply(req)
        if reply is not None:
            return reply
        if req.path == "/api/v3/time":
            return HttpReply(200, {"serverTime": self.server_ms()})
        if req.path in ("/api/v3/order", "/api/v3/openOrders", "/api/v3/myTrades",
                        "/api/v3/account"):
            params, bad = self._auth(req)
            if bad is not None:
                return bad
            return await self.private(req.method, req.path, params)
        return await self.md.route(HttpRequest(req.path, dict(parse_qsl(req.query))))

    async def private(self, method: str, path: str, p: dict[str, str]) -> HttpReply:
        if path == "/api/v3/account":
            return HttpReply(200, {"balances": [
                {"asset": a, "free": f"{self.free(a):.8f}", "locked": f"{self.locked(a):.8f}"}
                for a in self.balances]})
        if path == "/api/v3/openOrders":
            return HttpReply(200, [self._view(o) for o in self.orders.values()
                                   if o.status in ("NEW", "PARTIALLY_FILLED")
                                   and o.symbol == p.get("symbol", o.symbol)])
        if path == "/api/v3/myTrades":
            start = int(p.get("startTime", 0))
            return HttpReply(200, [self._trade_row(f) for f in self.fills
                                   if f.order.symbol == p["symbol"] and f.time >= start])
        found = self._find(p)
        if method == "GET":
            if found is None:
                return self._err(400, -2013, "Order does not exist.")
            return HttpReply(200, self._view(found))
        if method == "DELETE":
            if found is None or found.status not in ("NEW", "PARTIALLY_FILLED"):
                return self._err(400, -2011, "Unknown order sent.")
            found.status = "CANCELED"
            await self._report(found, "CANCELED")
            return HttpReply(200, dict(self._view(found),
                                       origClientOrderId=found.client_id))
        return await self.new_order(p)

    def _find(self, p: dict[str, str]) -> Order | None:
        for o in self.orders.values():
            if o.client_id == p.get("origClientOrderId") or str(o.order_id) == p.get("orderId"):
                return o
        return None

    async def new_order(self, p: dict[str, str]) -> HttpReply:
        symbol, side, kind = p["symbol"], p["side"], p["type"]
        qty, price = float(p["quantity"]), float(p.get("price", 0) or 0)
        base, quote, tick, step = self.md.listed[symbol]
        if abs(qty / float(step) - round(qty / float(step))) > 1e-9:
            return self._err(400, -1013, "Filter failure: LOT_SIZE")
        if price and abs(price / float(tick) - round(price / float(tick))) > 1e-9:
            return self._err(400, -1013, "Filter failure: PRICE_FILTER")
        book = self.books[symbol]
        ref = price or (book.ask if side == "BUY" else book.bid)
        if qty * ref < 5.0:
            return self._err(400, -1013, "Filter failure: NOTIONAL")
        if self.working(p.get("newClientOrderId", "")):
            return self._err(400, -2010, "Duplicate order sent.")
        if not self.affordable(symbol, side, qty, ref):
            return self._err(400, -2010, "Account has insufficient balance for requested action.")
        if kind == "LIMIT_MAKER":  # post-only: refused if it would take at once
            if price >= book.ask if side == "BUY" else price <= book.bid:
                return self._err(400, -2010, "Order would immediately match and take.")
            kind = "LIMIT"
        n = self.next_id()
        order = Order(n, p.get("newClientOrderId") or f"x{n}", symbol,
                      side, kind, qty, price, float(p.get("stopPrice", 0) or 0),
                      p.get("timeInForce", "GTC"), time=self.server_ms())
        await self.open_order(order)
        return HttpReply(200, self._view(order))

    # -- views ---------------------------------------------------------------------------------

    def _view(self, o: Order) -> dict:
        return {"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_id,
                "price": f"{o.price:.8f}", "origQty": f"{o.qty:.8f}",
                "executedQty": f"{o.filled:.8f}",
                "cummulativeQuoteQty": f"{o.quote_filled:.8f}", "status": o.status,
                "timeInForce": o.tif, "type": o.type, "side": o.side,
                "stopPrice": f"{o.stop:.8f}", "time": o.time, "updateTime": self.server_ms(),
                "isWorking": True, "workingTime": o.time, "origQuoteOrderQty": "0.00000000",
                "selfTradePreventionMode": "EXPIRE_MAKER"}

    @staticmethod
    def _trade_row(f: Fill) -> dict:
        return {"symbol": f.order.symbol, "id": f.trade_id, "orderId": f.order.order_id,
                "orderListId": -1, "price": f"{f.price:.8f}", "qty": f"{f.qty:.8f}",
                "quoteQty": f"{f.qty * f.price:.8f}", "commission": f"{f.fee:.8f}",
                "commissionAsset": f.order.symbol[-4:], "time": f.time,
                "isBuyer": f.order.side == "BUY", "isMaker": f.maker, "isBestMatch": True}

    # -- the user data stream ------------------------------------------------------------------

    async def _report(self, o: Order, execution: str, fill: Fill | None = None) -> None:
        event = {"e": "executionReport", "E": self.server_ms(), "s": o.symbol,
                 "c": o.client_id, "S": o.side, "o": o.type, "f": o.tif,
                 "q": f"{o.qty:.8f}", "p": f"{o.price:.8f}", "P": f"{o.stop:.8f}",
                 "F": "0.00000000", "g": -1, "C": o.client_id if execution == "CANCELED" else "",
                 "x": execution, "X": o.status, "r": "NONE", "i": o.order_id,
                 "l": f"{fill.qty if fill else 0:.8f}", "z": f"{o.filled:.8f}",
                 "L": f"{fill.price if fill else 0:.8f}",
                 "n": f"{fill.fee if fill else 0:.8f}", "N": o.symbol[-4:] if fill else None,
                 "T": fill.time if fill else self.server_ms(), "t": fill.trade_id if fill else -1,
                 "w": o.status in ("NEW", "PARTIALLY_FILLED"), "m": bool(fill and fill.maker),
                 "O": o.time, "Z": f"{o.quote_filled:.8f}"}
        if execution == "CANCELED":
            event["c"] = f"cancel{o.order_id}"  # Binance: c is the cancel request's own id
        await self.broadcast(json.dumps({"subscriptionId": 0, "event": event}))

    async def ws(self, peer: WsPeer) -> None:
        if peer.path.rstrip("/") != "/ws-api/v3":
            await self.md.ws(peer)
            return
        lock = trio.Lock()
        while True:
            msg = json.loads(await peer.recv())
            params = msg.get("params", {})
            answer: dict[str, Any] = {"id": msg.get("id")}
            if msg.get("method") != "userDataStream.subscribe.signature":
                answer.update(status=400, error={"code": -1100, "msg": "unknown method"})
            elif params.get("apiKey") != API_KEY:
                answer.update(status=401, error={"code": -2015, "msg": "Invalid API-key"})
            else:
                payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
                ts = int(params.get("timestamp", 0))
                if not self._verify(payload, str(params.get("signature", ""))):
                    answer.update(status=400, error={"code": -1022, "msg": "Signature for this "
                                                                           "request is not valid."})
                elif abs(self.server_ms() - ts) > 5000:
                    answer.update(status=400, error={"code": -1021, "msg": "Timestamp outside "
                                                                           "of the recvWindow."})
                else:
                    answer.update(status=200, result={"subscriptionId": 0})
            async with lock:
                await peer.send(json.dumps(answer))
            if answer["status"] == 200:
                self.peers.append((peer, lock))
                self.subscribed.set()
