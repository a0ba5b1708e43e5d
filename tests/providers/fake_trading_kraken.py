"""A loopback Kraken spot venue that trades: the private REST API and the websocket v2
`executions` channel, beside the market-data fake of fake_venues.py (same port, same formats).

Every private request is checked as Kraken's "Spot REST Authentication" guide specifies: the
API-Key header, a nonce above the last one the key used (`EAPI:Invalid nonce` otherwise), and
API-Sign = base64(HMAC-SHA512(base64-decoded secret, URI path + SHA-256(nonce + POST body))),
computed here independently of providers/kraken/_sign.py. Orders obey AssetPairs' rules
(lot_decimals, pair_decimals, ordermin, costmin) and `deadline`, and are matched by the shared
exchange core (fake_trading.FakeExchange). The executions channel takes a token from
GetWebSocketsToken, sends a snapshot of open orders, then pending_new/new/trade/filled/canceled
reports (later reports leave out the order's unchanged fields, as Kraken's do) and answers
pings. Nothing here listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import trio

from tests.providers.fake_trading import (
    Book,
    DropConnection,
    FakeExchange,
    Fill,
    Order,
    RawRequest,
)
from tests.providers.fake_venues import FakeKraken, HttpReply, HttpRequest, WsPeer, _rfc3339

API_KEY = "fakeKrakenKey0123456789abcdefABCDEFghij"
# Kraken secrets are base64; this one decodes to 64 bytes.
SECRET = base64.b64encode(bytes(range(7, 71))).decode()
AUTH_PATH = "/auth/v2"  # the fake's ws-auth endpoint (Kraken's own is another host's /v2)

# REST pair -> (altname, v2 symbol, base asset code, quote asset code)
PAIRS = {"XXBTZUSD": ("XBTUSD", "BTC/USD", "XXBT", "ZUSD"),
         "XETHZUSD": ("ETHUSD", "ETH/USD", "XETH", "ZUSD")}
_STATUS = {"NEW": "open", "PARTIALLY_FILLED": "open", "FILLED": "closed",
           "CANCELED": "canceled", "EXPIRED": "expired"}
_WS_STATUS = {"NEW": "new", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled",
              "CANCELED": "canceled", "EXPIRED": "expired"}
_TYPES = {"market": "MARKET", "limit": "LIMIT", "stop-loss": "STOP_LOSS",
          "stop-loss-limit": "STOP_LOSS_LIMIT"}
_KRAKEN_TYPE = {v: k for k, v in _TYPES.items()}


def txid(n: int, kind: str = "O") -> str:
    return f"{kind}{n:05d}-FAKEK-{n:06d}"


def expected_sign(path: str, body: str, secret: str = SECRET) -> str:
    """API-Sign as Kraken documents it, for `body` (which holds the nonce) sent to `path`."""
    nonce = dict(parse_qsl(body, keep_blank_values=True)).get("nonce", "")
    digest = hashlib.sha256((nonce + body).encode()).digest()
    mac = hmac.new(base64.b64decode(secret), path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


@dataclass
class FakeKrakenTrading(FakeExchange):
    """See the module docstring."""

    secret: str = SECRET
    balances: dict[str, float] = field(default_factory=lambda: {"ZUSD": 10_000.0, "XXBT": 0.0,
                                                                 "XETH": 0.0})
    md: FakeKraken = field(default_factory=FakeKraken)
    books: dict[str, Book] = field(default_factory=lambda: {"XXBTZUSD": Book(61_800.0, 61_800.1),
                                                            "XETHZUSD": Book(2650.0, 2650.01)})
    last_nonce: int = 0
    tokens: set[str] = field(default_factory=set)

    def assets(self, symbol: str) -> tuple[str, str]:
        return PAIRS[symbol][2], PAIRS[symbol][3]

    def pair(self, name: str) -> str | None:
        """The REST pair a request names (REST name, altname or v1/v2 wsname)."""
        v2 = self.md.by_rest.get(name) or (name if name in self.md.PAIRS else None)
        return self.md.PAIRS[v2][0] if v2 else None

    # -- auth ----------------------------------------------------------------------------------

    @staticmethod
    def _err(*errors: str) -> HttpReply:
        return HttpReply(200, {"error": list(errors)})

    def _auth(self, req: RawRequest) -> tuple[dict[str, str], HttpReply | None]:
        if req.headers.get("api-key") != API_KEY:
            return {}, self._err("EAPI:Invalid key")
        params = dict(parse_qsl(req.body, keep_blank_values=True))
        if not hmac.compare_digest(req.headers.get("api-sign", ""),
                                   expected_sign(req.path, req.body, self.secret)):
            return {}, self._err("EAPI:Invalid signature")
        try:
            nonce = int(params.get("nonce", ""))
        except ValueError:
            return {}, self._err("EAPI:Invalid nonce")
        if nonce <= self.last_nonce:
            return {}, self._err("EAPI:Invalid nonce")
        self.last_nonce = nonce
        return params, None

    # -- HTTP ----------------------------------------------------------------------------------

    async def http(self, req: RawRequest) -> HttpReply:
        self.requests.append(req)
        reply = self.queued_reply(req)
        if reply is not None:
            return reply
        if req.path == "/0/public/Time":
            now = self.server_ms() / 1000
            return HttpReply(200, {"error": [], "result": {
                "unixtime": int(now), "rfc1123": _rfc3339(int(now) * 1000)}})
        if req.path.startswith("/0/private/"):
            if req.method != "POST":
                return self._err("EGeneral:Invalid arguments")
            params, bad = self._auth(req)
            if bad is not None:
                return bad
            method = req.path.removeprefix("/0/private/")
            handler = getattr(self, f"_{method}", None)
            if handler is None:
                return self._err("EGeneral:Unknown method")
            out = await handler(params)
            return out if isinstance(out, HttpReply) else HttpReply(200, {"error": [],
                                                                          "result": out})
        return await self.md.http(HttpRequest(req.path, dict(parse_qsl(req.query))))

    async def _AddOrder(self, p: dict[str, str]) -> Any:  # noqa: N802 - Kraken's method name
        symbol = self.pair(p.get("pair", ""))
        if symbol is None:
            return self._err("EQuery:Unknown asset pair")
        v2 = PAIRS[symbol][1]
        _, _, _, tick, lot_decimals, ordermin = self.md.PAIRS[v2]
        if "deadline" in p and _epoch(p["deadline"]) < self.server_ms() / 1000:
            return self._err("EService:Deadline elapsed")
        volume, price = p.get("volume", ""), p.get("price", "")
        if len(volume.partition(".")[2]) > lot_decimals:
            return self._err("EGeneral:Invalid arguments:volume")
        decimals = len(tick.partition(".")[2])
        for text in (price, p.get("price2", "")):
            if len(text.partition(".")[2]) > decimals:
                return self._err(f"EOrder:Invalid price:{symbol} price can only be specified "
                                 f"up to {decimals} decimals.")
        qty, px = float(volume), float(price or 0)
        kind = _TYPES.get(p.get("ordertype", ""))
        if kind is None:
            return self._err("EGeneral:Invalid arguments:ordertype")
        if qty < float(ordermin):
            return self._err("EOrder:Order minimum not met")
        side = p.get("type", "").upper()
        book = self.books[symbol]
        limit = px if kind == "LIMIT" else float(p.get("price2", 0) or 0)
        ref = limit or (book.ask if side == "BUY" else book.bid)
        if qty * ref < 0.5:
            return self._err("EOrder:Cost minimum not met")
        if p.get("cl_ord_id") and self.working(p["cl_ord_id"]):
            return self._err("EOrder:Duplicate order")
        if not self.affordable(symbol, side, qty, ref):
            return self._err("EOrder:Insufficient funds")
        if "post" in p.get("oflags", "").split(",") and (
                limit >= book.ask if side == "BUY" else limit <= book.bid):
            return self._err("EOrder:Post only order")
        n = self.next_id()
        order = Order(n, p.get("cl_ord_id", ""), symbol, side, kind, qty, limit,
                      px if kind.startswith("STOP") else 0.0, p.get("timeinforce", "GTC"),
                      time=self.server_ms())
        await self.open_order(order)
        return {"descr": {"order": f"{p['type']} {volume} {PAIRS[symbol][0]} @ "
                          f"{p['ordertype']} {price}"}, "txid": [txid(n)]}

    def _find(self, p: dict[str, str]) -> list[Order]:
        if "txid" in p:
            ids = p["txid"].split(",")
            return [o for o in self.orders.values() if txid(o.order_id) in ids]
        if "cl_ord_id" in p:
            return [o for o in self.orders.values() if o.client_id == p["cl_ord_id"]]
        return list(self.orders.values())

    async def _CancelOrder(self, p: dict[str, str]) -> Any:  # noqa: N802
        found = [o for o in self._find(p) if o.status in ("NEW", "PARTIALLY_FILLED")]
        if not found:
            return self._err("EOrder:Unknown order")
        for o in found:
            o.status = "CANCELED"
            await self._report(o, "CANCELED")
        return {"count": len(found), "pending": False}

    async def _OpenOrders(self, p: dict[str, str]) -> Any:  # noqa: N802
        return {"open": {txid(o.order_id): self._info(o) for o in self._find(p)
                         if o.status in ("NEW", "PARTIALLY_FILLED")}}

    async def _ClosedOrders(self, p: dict[str, str]) -> Any:  # noqa: N802
        done = [o for o in self._find(p) if o.status not in ("NEW", "PARTIALLY_FILLED")]
        return {"closed": {txid(o.order_id): self._info(o) for o in done[-50:]},
                "count": len(done)}

    async def _QueryOrders(self, p: dict[str, str]) -> Any:  # noqa: N802
        found = self._find({"txid": p.get("txid", "")})
        if not found:
            return self._err("EOrder:Invalid order")
        return {txid(o.order_id): self._info(o) for o in found}

    async def _TradesHistory(self, p: dict[str, str]) -> Any:  # noqa: N802
        start = float(p.get("start", 0))
        rows = [f for f in reversed(self.fills) if f.time / 1000 > start]  # newest first
        ofs = int(p.get("ofs", 0))
        return {"trades": {txid(f.trade_id, "T"): self._trade_row(f)
                           for f in rows[ofs:ofs + 50]}, "count": len(rows)}

    async def _BalanceEx(self, p: dict[str, str]) -> Any:  # noqa: N802
        return {a: {"balance": f"{b:.8f}", "hold_trade": f"{self.locked(a):.8f}"}
                for a, b in self.balances.items()}

    async def _GetWebSocketsToken(self, p: dict[str, str]) -> Any:  # noqa: N802
        token = base64.b64encode(hashlib.sha256(f"{self.secret}{p['nonce']}".encode())
                                 .digest()).decode()
        self.tokens.add(token)
        return {"token": token, "expires": 900}

    # -- views ---------------------------------------------------------------------------------

    def _info(self, o: Order) -> dict:
        kind = _KRAKEN_TYPE[o.type]
        first, second = (o.stop, o.price) if kind.startswith("stop") else (o.price, 0.0)
        return {"refid": None, "userref": 0, "cl_ord_id": o.client_id or None,
                "status": _STATUS[o.status], "opentm": o.time / 1000, "starttm": 0,
                "expiretm": 0, "descr": {
                    "pair": PAIRS[o.symbol][0], "type": o.side.lower(), "ordertype": kind,
                    "price": f"{first:.1f}", "price2": f"{second:.1f}", "leverage": "none",
                    "order": f"{o.side.lower()} {o.qty:.8f} {PAIRS[o.symbol][0]} @ {kind}",
                    "close": ""},
                "vol": f"{o.qty:.8f}", "vol_exec": f"{o.filled:.8f}",
                "cost": f"{o.quote_filled:.5f}", "fee": "0.00000",
                "price": f"{o.quote_filled / o.filled if o.filled else 0:.1f}",
                "stopprice": "0.00000", "limitprice": "0.00000", "misc": "", "oflags": "fciq"}

    def _trade_row(self, f: Fill) -> dict:
        o = f.order
        return {"ordertxid": txid(o.order_id), "postxid": "TKH2SE-M7IF5-CFI7LT",
                "pair": o.symbol, "time": f.time / 1000, "type": o.side.lower(),
                "ordertype": _KRAKEN_TYPE[o.type], "price": f"{f.price:.1f}",
                "cost": f"{f.qty * f.price:.5f}", "fee": f"{f.fee:.5f}", "vol": f"{f.qty:.8f}",
                "margin": "0.00000", "leverage": "0", "misc": "", "trade_id": f.trade_id,
                "maker": f.maker}

    # -- the executions channel ----------------------------------------------------------------

    def _item(self, o: Order, exec_type: str, *, full: bool) -> dict:
        item: dict[str, Any] = {"order_id": txid(o.order_id), "exec_type": exec_type,
                                "order_status": _WS_STATUS[o.status],
                                "cum_qty": o.filled, "cum_cost": o.quote_filled,
                                "timestamp": _rfc3339(self.server_ms())}
        if full:
            item.update(symbol=PAIRS[o.symbol][1], side=o.side.lower(),
                        order_type=_KRAKEN_TYPE[o.type], order_qty=o.qty,
                        time_in_force=o.tif, order_userref=0)
            if o.client_id:
                item["cl_ord_id"] = o.client_id
            if o.price:
                item["limit_price"] = o.price
            if o.stop:
                item["triggers"] = {"reference": "last", "price": o.stop, "price_type": "static"}
        return item

    async def _report(self, o: Order, execution: str, fill: Fill | None = None) -> None:
        items = []
        if execution == "NEW":
            items.append(dict(self._item(o, "pending_new", full=True),
                              order_status="pending_new"))
            items.append(self._item(o, "new", full=False))
        elif execution == "TRADE" and fill is not None:
            item = self._item(o, "trade", full=True)
            item.update(order_status="partially_filled", exec_id=txid(fill.trade_id, "T"),
                        trade_id=fill.trade_id, last_qty=fill.qty, last_price=fill.price,
                        cost=fill.qty * fill.price, liquidity_ind="m" if fill.maker else "t",
                        fees=[{"asset": "USD", "qty": fill.fee}], fee_usd_equiv=fill.fee)
            items.append(item)
            if o.status == "FILLED":
                items.append(self._item(o, "filled", full=False))
        elif execution in ("CANCELED", "EXPIRED"):
            item = self._item(o, execution.lower() if execution == "EXPIRED" else "canceled",
                              full=False)
            item["reason"] = "User requested" if execution == "CANCELED" else "Expired"
            items.append(item)
        await self.broadcast(json.dumps({"channel": "executions", "type": "update",
                                         "data": items}))

    async def ws(self, peer: WsPeer) -> None:
        if peer.path.rstrip("/") != AUTH_PATH:
            await self.md.ws(peer)
            return
        lock = trio.Lock()
        await peer.send(json.dumps({"channel": "status", "type": "update", "data": [{
            "api_version": "v2", "connection_id": 77, "system": "online",
            "version": "2.0.9"}]}))
        while True:
            msg = json.loads(await peer.recv())
            stamp = _rfc3339(self.server_ms())
            if msg.get("method") == "ping":
                async with lock:
                    await peer.send(json.dumps({"method": "pong", "req_id": msg.get("req_id"),
                                                "time_in": stamp, "time_out": stamp}))
                continue
            params = msg.get("params") or {}
            ok = (msg.get("method") == "subscribe" and params.get("channel") == "executions"
                  and params.get("token") in self.tokens)
            answer: dict[str, Any] = {"method": msg.get("method"), "success": ok,
                                      "time_in": stamp, "time_out": stamp,
                                      "req_id": msg.get("req_id")}
            if ok:
                answer["result"] = {"channel": "executions", "maxratecount": 125,
                                    "snap_orders": True, "snap_trades": False}
            else:
                answer["error"] = "EGeneral:Invalid arguments:token"
            async with lock:
                await peer.send(json.dumps(answer))
                if ok:
                    snapshot = [self._item(o, "new", full=True) for o in self.orders.values()
                                if o.status in ("NEW", "PARTIALLY_FILLED")]
                    await peer.send(json.dumps({"channel": "executions", "type": "snapshot",
                                                "data": snapshot, "sequence": 1}))
            if ok:
                self.peers.append((peer, lock))
                self.subscribed.set()

    async def new_order(self, p: dict[str, str]) -> Any:
        """Place an order as another client of the account would (no signature needed)."""
        try:
            return await self._AddOrder(p)
        except DropConnection:
            return None


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
