"""Binance spot order entry: signed REST requests and the WebSocket API user data stream, as a
`TradingSession` (engine/clearing/venue_api.py).

REST (binance-spot-api-docs rest-api.md): `POST /api/v3/order` (newClientOrderId is the
engine's id), `GET`/`DELETE /api/v3/order` by origClientOrderId, `GET /api/v3/openOrders`,
`GET /api/v3/myTrades`, `GET /api/v3/account`, `GET /api/v3/time`. Parameters go in the query
string of GET/DELETE and in the form body of POST; the signature covers them byte for byte.
Private stream: the WebSocket API (`userDataStream.subscribe.signature`), since Binance retired
spot listenKeys; `executionReport` events become `Execution`s.

A -1021 answer (timestamp outside recvWindow) means the request was refused unprocessed: the
clock offset is measured again from `/api/v3/time` and the request signed anew, once. A 5xx or a
broken connection after an order was written is `AnswerLost`: the broker resolves it by querying
the client order id, never by sending the order again. Keys never appear in a log line or an
error: errors carry Binance's code and message only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from engine.clearing.venue_api import (
    Balance,
    Execution,
    OrderSpec,
    StreamHooks,
    SymbolRules,
    TradingError,
    VenueFill,
    VenueOrder,
    VenueRejected,
)
from providers._net import HttpClient, InstrumentTable
from providers._net.http import Response
from providers._net.trading import rules_of, send_private, step_str
from providers._net.ws import open_ws

from ._sign import Signer, ws_payload

__all__ = ["BinanceTrading"]

log = logging.getLogger("providers.binance")

# Request weights (rest-api.md, "Weight" of each endpoint).
W_ORDER, W_QUERY, W_CANCEL, W_OPEN_ONE, W_TRADES, W_ACCOUNT, W_TIME = 1, 4, 1, 6, 20, 20, 1
ERR_TIMESTAMP = -1021
ERR_NO_SUCH_ORDER = -2013  # "Order does not exist."
ERR_UNKNOWN_ORDER = -2011  # "Unknown order sent." (a cancel of an order that is not working)

_STATUS = {"NEW": "new", "PARTIALLY_FILLED": "partially_filled", "FILLED": "filled",
           "CANCELED": "cancelled", "PENDING_CANCEL": "new", "REJECTED": "rejected",
           "EXPIRED": "expired", "EXPIRED_IN_MATCH": "expired"}
_TYPE = {"market": "MARKET", "limit": "LIMIT", "stop": "STOP_LOSS",
         "stop_limit": "STOP_LOSS_LIMIT"}
_ENGINE_TYPE = {"MARKET": "market", "LIMIT": "limit", "LIMIT_MAKER": "limit",
                "STOP_LOSS": "stop", "STOP_LOSS_LIMIT": "stop_limit"}


def _num(x: Any) -> float:
    return float(x) if x not in (None, "") else 0.0


class BinanceTrading:
    """One Binance account: see the module docstring."""

    venue = "binance"
    time_in_force = ("GTC", "IOC", "FOK")
    has_amend = False  # modify is cancel-replace

    def __init__(self, http: HttpClient, table: InstrumentTable, symbols: list[str],
                 signer: Signer, ws_api_url: str, now: Callable[[], float],
                 recv_window_ms: int = 5000, connect_timeout: float = 10.0) -> None:
        self.http = http
        self.signer = signer
        self.ws_api_url = ws_api_url
        self.now = now
        self.recv_window = recv_window_ms
        self.connect_timeout = connect_timeout
        self.offset = 0.0  # venue clock minus ours, seconds
        self._inst = {s: table.resolve(s) for s in symbols}
        self._name = {inst.venue_symbol: s for s, inst in self._inst.items()}
        self._rules = {s: rules_of(s, inst) for s, inst in self._inst.items()}
        self._ids: dict[int, str] = {}  # Binance orderId -> client order id

    def __repr__(self) -> str:
        return f"<BinanceTrading {self.http.base_url} {self.signer!r}>"

    def rules(self, symbol: str) -> SymbolRules:
        return self._rules[symbol]

    # -- signed REST ---------------------------------------------------------------------------

    def _timestamp(self) -> int:
        return int(round((self.now() + self.offset) * 1000))

    async def sync_time(self) -> float:
        before = self.now()
        resp = await self.http.send("GET", "/api/v3/time", weight=W_TIME)
        after = self.now()
        try:
            server = int(json.loads(resp.body)["serverTime"]) / 1000
        except (ValueError, KeyError, TypeError):
            raise TradingError(f"binance: unexpected /api/v3/time answer ({resp.status})") from None
        self.offset = server - (before + after) / 2
        return self.offset

    async def _signed(self, method: str, path: str, params: dict[str, Any], weight: int,
                      *, changes_state: bool) -> Any:
        """Send a signed request; return its JSON. Raise VenueRejected with Binance's words,
        AnswerLost when a state-changing request's outcome is unknown, TradingError otherwise."""
        for attempt in (1, 2):
            payload = urlencode({**params, "recvWindow": self.recv_window,
                                 "timestamp": self._timestamp()})
            signed = self.signer.signed_query(payload)
            headers = (("X-MBX-APIKEY", self.signer.api_key.reveal()),)
            if method == "POST":
                request = self.http.send(
                    method, path, body=signed.encode(), weight=weight,
                    headers=(*headers, ("Content-Type", "application/x-www-form-urlencoded")))
            else:
                request = self.http.send(method, path, query=signed, headers=headers,
                                         weight=weight)
            resp = await send_private("binance", f"{method} {path}", request,
                                      changes_state=changes_state)
            body = _json(resp)
            if resp.status in (418, 429):
                wait = resp.headers.get("retry-after")
                what = "banned this IP (HTTP 418)" if resp.status == 418 else \
                    "rate limit reached (HTTP 429)"
                raise VenueRejected("binance", f"{what}; requests wait "
                                    f"{wait or 'a backoff'} s", resp.status)
            if resp.status >= 400:
                code = body.get("code") if isinstance(body, dict) else None
                msg = body.get("msg", resp.text(200)) if isinstance(body, dict) else resp.text(200)
                if code == ERR_TIMESTAMP and attempt == 1:
                    offset = await self.sync_time()
                    log.warning("binance: request timestamp outside recvWindow (%s); clock offset "
                                "now %+.3f s, signing again", msg, offset)
                    continue
                raise VenueRejected("binance", f"{msg} (code {code})", code)
            return body
        raise AssertionError("unreachable")

    # -- orders ----------------------------------------------------------------------------------

    async def place(self, spec: OrderSpec) -> VenueOrder:
        inst = self._inst[spec.symbol]
        rules = self._rules[spec.symbol]
        kind = "LIMIT_MAKER" if spec.post_only and spec.order_type == "limit" else \
            _TYPE[spec.order_type]
        params: dict[str, Any] = {"symbol": inst.rest_symbol, "side": spec.side.upper(),
                                  "type": kind,
                                  "quantity": step_str(spec.size, rules.lot_size),
                                  "newClientOrderId": spec.venue_id,
                                  "newOrderRespType": "RESULT"}
        if spec.limit_price is not None:
            params["price"] = step_str(spec.limit_price, rules.tick_size)
            if kind != "LIMIT_MAKER":
                params["timeInForce"] = spec.tif
        if spec.stop_price is not None:
            params["stopPrice"] = step_str(spec.stop_price, rules.tick_size)
        return self._order(await self._signed("POST", "/api/v3/order", params, W_ORDER,
                                              changes_state=True))

    async def cancel(self, venue_id: str, symbol: str) -> VenueOrder | None:
        params = {"symbol": self._inst[symbol].rest_symbol, "origClientOrderId": venue_id}
        try:
            return self._order(await self._signed("DELETE", "/api/v3/order", params, W_CANCEL,
                                                  changes_state=True))
        except VenueRejected as exc:
            if exc.code == ERR_UNKNOWN_ORDER:
                return None
            raise

    async def query(self, venue_id: str, symbol: str) -> VenueOrder | None:
        params = {"symbol": self._inst[symbol].rest_symbol, "origClientOrderId": venue_id}
        try:
            return self._order(await self._signed("GET", "/api/v3/order", params, W_QUERY,
                                                  changes_state=False))
        except VenueRejected as exc:
            if exc.code == ERR_NO_SUCH_ORDER:
                return None
            raise

    async def open_orders(self, symbols: list[str]) -> list[VenueOrder]:
        out = []
        for s in symbols:
            rows = await self._signed("GET", "/api/v3/openOrders",
                                      {"symbol": self._inst[s].rest_symbol}, W_OPEN_ONE,
                                      changes_state=False)
            out.extend(self._order(r) for r in rows)
        return out

    async def fills(self, symbol: str, since: float) -> list[VenueFill]:
        inst = self._inst[symbol]
        rows = await self._signed("GET", "/api/v3/myTrades",
                                  {"symbol": inst.rest_symbol,
                                   "startTime": max(0, int(since * 1000)), "limit": 1000},
                                  W_TRADES, changes_state=False)
        out = []
        for r in rows:
            oid = int(r["orderId"])
            cid = self._ids.get(oid)
            if cid is None:
                order = await self._signed("GET", "/api/v3/order",
                                           {"symbol": inst.rest_symbol, "orderId": oid},
                                           W_QUERY, changes_state=False)
                cid = self._order(order).venue_id
            price = _num(r["price"])
            out.append(VenueFill(
                venue_id=cid, symbol=symbol, side="buy" if r.get("isBuyer") else "sell",
                trade_id=int(r["id"]), price=price, size=_num(r["qty"]),
                fee=self._fee(_num(r.get("commission")), str(r.get("commissionAsset", "")),
                              price, inst.base, inst.quote),
                liquidity="maker" if r.get("isMaker") else "taker", time=int(r["time"]) / 1000))
        out.sort(key=lambda f: (f.time, f.trade_id))
        return out

    async def balances(self) -> dict[str, Balance]:
        body = await self._signed("GET", "/api/v3/account", {"omitZeroBalances": "true"},
                                  W_ACCOUNT, changes_state=False)
        return {str(b["asset"]).upper(): Balance(str(b["asset"]).upper(), _num(b["free"]),
                                                 _num(b["locked"]))
                for b in body.get("balances", [])}

    def _order(self, r: dict) -> VenueOrder:
        symbol = self._name.get(str(r.get("symbol")), str(r.get("symbol", "")).lower())
        cid = str(r.get("clientOrderId") or r.get("origClientOrderId") or "")
        if "origClientOrderId" in r and r.get("status") == "CANCELED":
            cid = str(r["origClientOrderId"])  # a cancel's answer names the cancel request too
        if r.get("orderId") is not None:
            self._ids[int(r["orderId"])] = cid
        price, stop = _num(r.get("price")), _num(r.get("stopPrice"))
        return VenueOrder(
            venue_id=cid, symbol=symbol, side=str(r.get("side", "BUY")).lower(),  # type: ignore[arg-type]
            status=_STATUS.get(str(r.get("status")), "new"),  # type: ignore[arg-type]
            size=_num(r.get("origQty")), filled=_num(r.get("executedQty")),
            order_type=_ENGINE_TYPE.get(str(r.get("type")), "limit"),
            limit_price=price or None, stop_price=stop or None,
            order_id=str(r.get("orderId", "")))

    @staticmethod
    def _fee(amount: float, asset: str, price: float, base: str, quote: str) -> float:
        if not amount or asset.upper() == quote.upper():
            return amount
        if asset.upper() == base.upper():
            return amount * price
        log.warning("binance: a fee of %g %s is not in %s or %s; the ledger records it as 0",
                    amount, asset, base, quote)
        return 0.0

    # -- the private stream ----------------------------------------------------------------------

    async def private_stream(self, hooks: StreamHooks) -> None:
        try:
            async with open_ws(self.ws_api_url, self.connect_timeout) as ws:
                await self._subscribe(ws)
                await hooks.on_connected()
                while True:
                    msg = json.loads(await ws.get_message())
                    event = msg.get("event") if isinstance(msg, dict) else None
                    if isinstance(event, dict) and event.get("e") == "executionReport":
                        hooks.on_execution(self._execution(event))
        except (ConnectionClosed, HandshakeError, trio.TooSlowError, OSError,
                ValueError) as exc:
            raise TradingError(f"binance: user data stream lost ({type(exc).__name__})") from None

    async def _subscribe(self, ws: Any) -> None:
        params = {"apiKey": self.signer.api_key.reveal(), "timestamp": self._timestamp()}
        params["signature"] = self.signer.sign(ws_payload(params))
        await ws.send_message(json.dumps({"id": "engine-uds", "method":
                                          "userDataStream.subscribe.signature",
                                          "params": params}))
        with trio.fail_after(self.connect_timeout):
            while True:
                answer = json.loads(await ws.get_message())
                if isinstance(answer, dict) and answer.get("id") == "engine-uds":
                    break
        if answer.get("status") != 200:
            err = answer.get("error") or {}
            if err.get("code") == ERR_TIMESTAMP:
                await self.sync_time()
            raise TradingError(f"binance: user data stream refused: {err.get('msg')} "
                               f"(code {err.get('code')})")

    def _execution(self, e: dict) -> Execution:
        symbol = self._name.get(str(e.get("s")), str(e.get("s", "")).lower())
        inst = self._inst.get(symbol)
        cid = str(e.get("C") or e.get("c")) if e.get("x") == "CANCELED" else str(e.get("c"))
        status = _STATUS.get(str(e.get("X")), "new")
        side = str(e.get("S", "BUY")).lower()
        order = VenueOrder(venue_id=cid, symbol=symbol, side=side,  # type: ignore[arg-type]
                           status=status, size=_num(e.get("q")),  # type: ignore[arg-type]
                           filled=_num(e.get("z")),
                           order_type=_ENGINE_TYPE.get(str(e.get("o")), "limit"),
                           limit_price=_num(e.get("p")) or None,
                           stop_price=_num(e.get("P")) or None, order_id=str(e.get("i", "")),
                           reason=str(e.get("r", "")) if e.get("r") not in (None, "NONE") else "")
        if e.get("i") is not None:
            self._ids[int(e["i"])] = cid
        fill = None
        if e.get("x") == "TRADE" and _num(e.get("l")) > 0:
            price = _num(e.get("L"))
            fee = self._fee(_num(e.get("n")), str(e.get("N") or ""), price,
                            inst.base if inst else "", inst.quote if inst else "")
            fill = VenueFill(venue_id=cid, symbol=symbol, side=side,  # type: ignore[arg-type]
                             trade_id=int(e.get("t", -1)), price=price, size=_num(e.get("l")),
                             fee=fee, liquidity="maker" if e.get("m") else "taker",
                             time=_num(e.get("T") or e.get("E")) / 1000)
        return Execution(venue_id=cid, status=status,  # type: ignore[arg-type]
                         order=order, fill=fill, reason=order.reason)


def _json(resp: Response) -> Any:
    try:
        return json.loads(resp.body) if resp.body else {}
    except ValueError:
        return {"msg": resp.text(200)}
