"""Kraken spot order entry: signed REST requests and the websocket v2 `executions` stream, as a
`TradingSession` (engine/clearing/venue_api.py).

REST (docs.kraken.com, Spot REST): every private call is a POST to `/0/private/<Method>` with a
form body that starts with a strictly increasing `nonce`, signed in the `API-Sign` header
(_sign.py). `AddOrder` carries the engine's client order id as `cl_ord_id` and a `deadline`
(`order_deadline` seconds ahead on the venue's clock) after which Kraken refuses it, so an
order whose answer was lost can be declared never-arrived once the deadline has passed.
A refusal for a passed deadline (`EService:Deadline elapsed`: our clock behind Kraken's) measures
the clock offset again from `/0/public/Time` and signs the order anew, once.
`CancelOrder`, `OpenOrders` and `ClosedOrders` name orders by `cl_ord_id` (Kraken's txid once
known: `QueryOrders`), `TradesHistory` gives the fills, `BalanceEx` the balances and holds.
Kraken answers HTTP 200 with an `error` list: `EOrder:Insufficient funds`, `EOrder:Order minimum
not met`... become VenueRejected in Kraken's words; `EAPI:Invalid nonce` is retried once with a
fresh nonce (the request was refused unprocessed); `EAPI:Rate limit exceeded` and
`EOrder:Rate limit exceeded` reject the request and hold the next ones back.

Rate limits, as Kraken documents them: public calls share the market-data client's pacing;
private calls spend the account's REST counter (`private_rate` per second, `private_burst`
deep: the Starter tier's decay of 0.33/s and maximum of 15; TradesHistory costs 2), and
AddOrder/CancelOrder the trading counter (`order_rate`, `order_burst`).

Private stream: `GetWebSocketsToken`, then `executions` on `ws_auth_url` with `snap_orders`:
reports become `Execution`s; a silent connection is pinged, and one silent past `stale_after`
is dropped (the broker polls REST and reconciles after it resubscribes). Keys and the websocket
token never appear in a log line or an error: errors carry Kraken's error strings only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from engine.clearing.venue_api import (
    AnswerLost,
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
from providers._net import HttpClient, InstrumentTable, RateLimited, RateLimiter
from providers._net.trading import rules_of, send_private, step_str
from providers._net.ws import open_ws

from ._private import TXID, balances, execution, order_view, trade_fill
from ._sign import Nonces, Signer

__all__ = ["KrakenTrading"]

log = logging.getLogger("providers.kraken")

_TYPE = {"market": "market", "limit": "limit", "stop": "stop-loss",
         "stop_limit": "stop-loss-limit"}
_RATE = ("EAPI:Rate limit exceeded", "EOrder:Rate limit exceeded", "EGeneral:Too many requests")
_NONCE = "EAPI:Invalid nonce"
# AddOrder refused because its deadline had passed on Kraken's clock: our clock is behind.
_DEADLINE = "EService:Deadline elapsed"
_UNKNOWN = ("EOrder:Unknown order", "EOrder:Invalid order")
# The matching engine's own failure: it may have acted on the request before failing.
_UNSURE = ("EGeneral:Internal error",)
_ORDER_METHODS = ("AddOrder", "CancelOrder")
PAGE = 50  # TradesHistory, ClosedOrders and QueryOrders answer 50 rows a call


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KrakenTrading:
    """One Kraken account: see the module docstring."""

    venue = "kraken"
    time_in_force = ("GTC", "IOC")  # AddOrder's timeinforce: GTC, IOC (and GTD); no FOK
    has_amend = False  # modify is cancel-replace

    def __init__(self, http: HttpClient, private: HttpClient, table: InstrumentTable,
                 symbols: list[str], signer: Signer, ws_auth_url: str,
                 now: Callable[[], float], *, deadline: float = 5.0,
                 private_rate: float = 0.33, private_burst: int = 15,
                 order_rate: float = 1.0, order_burst: int = 60,
                 connect_timeout: float = 10.0, stale_after: float = 10.0) -> None:
        self.http = http  # public endpoints, paced with the market data
        self.private = private
        self.signer = signer
        self.ws_auth_url = ws_auth_url
        self.now = now
        self.deadline = deadline
        # The broker waits this long (ms) for a lost order to show up before calling it lost.
        self.recv_window = deadline * 1000
        self.connect_timeout = connect_timeout
        self.stale_after = stale_after
        self.offset = 0.0  # venue clock minus ours, seconds
        self.nonces = Nonces(now)
        self._counter = RateLimiter("kraken", rate=private_rate, burst=private_burst,
                                    max_wait=private.limiter.max_wait)
        self._trading = RateLimiter("kraken", rate=order_rate, burst=order_burst,
                                    max_wait=private.limiter.max_wait)
        self._lock = trio.Lock()  # nonces must reach Kraken in the order they were made
        self._inst = {s: table.resolve(s) for s in symbols}
        self._name: dict[str, str] = {}
        self._assets: dict[str, str] = {}
        for s, inst in self._inst.items():
            for n in (inst.venue_symbol, inst.rest_symbol, inst.extra.get("rest_pair"),
                      inst.extra.get("wsname")):
                if n:
                    self._name[str(n)] = s
            self._assets[str(inst.extra.get("base_asset", inst.base))] = inst.base
            self._assets[str(inst.extra.get("quote_asset", inst.quote))] = inst.quote
        self._rules = {s: rules_of(s, inst) for s, inst in self._inst.items()}
        self._cl: dict[str, str] = {}  # txid -> client order id
        self._txid: dict[str, str] = {}  # client order id -> txid
        self._known: dict[str, dict] = {}  # txid -> what the executions stream said of it

    def __repr__(self) -> str:
        return f"<KrakenTrading {self.private.base_url} {self.signer!r}>"

    def rules(self, symbol: str) -> SymbolRules:
        return self._rules[symbol]

    # -- signed REST ---------------------------------------------------------------------------

    async def sync_time(self) -> float:
        before = self.now()
        payload = await self.http.get_json("/0/public/Time")
        after = self.now()
        try:
            server = float(payload["result"]["unixtime"])
        except (KeyError, TypeError, ValueError):
            raise TradingError("kraken: unexpected /0/public/Time answer") from None
        # unixtime is whole seconds: its middle is half a second on.
        self.offset = server + 0.5 - (before + after) / 2
        if abs(self.offset) < 1.0:
            self.offset = 0.0  # within the answer's resolution
        return self.offset

    async def _call(self, method: str, params: dict[str, Any], *, changes_state: bool,
                    cost: int = 1) -> Any:
        """POST a signed private request; return its `result`. Raise VenueRejected with
        Kraken's error strings, AnswerLost when a state-changing request's outcome is unknown,
        TradingError otherwise."""
        path = f"/0/private/{method}"
        bucket = self._trading if method in _ORDER_METHODS else self._counter
        for attempt in (1, 2):
            for _ in range(cost):
                await bucket.acquire()
            if method == "AddOrder":
                # Signed anew on each attempt, on the venue's clock as last measured.
                params = {**params, "deadline": _rfc3339(self.now() + self.offset
                                                         + self.deadline)}
            async with self._lock:
                nonce = self.nonces.next()
                body = urlencode({"nonce": nonce, **params})
                headers = (("API-Key", self.signer.api_key.reveal()),
                           ("API-Sign", self.signer.sign(path, nonce, body)),
                           ("Content-Type", "application/x-www-form-urlencoded"))
                resp = await send_private(
                    "kraken", method, self.private.send("POST", path, body=body.encode(),
                                                        headers=headers),
                    changes_state=changes_state)
            try:
                payload = json.loads(resp.body)
            except ValueError:
                payload = None
            errors = payload.get("error") if isinstance(payload, dict) else None
            if not isinstance(errors, list):
                raise VenueRejected("kraken", f"{method} answered HTTP {resp.status} without "
                                    f"Kraken's error list", resp.status)
            errors = [str(e)[:200] for e in errors]
            if not errors:
                if resp.status >= 400:
                    raise VenueRejected("kraken", f"{method} answered HTTP {resp.status}",
                                        resp.status)
                return payload.get("result")
            first = errors[0]
            if first.startswith(_NONCE) and attempt == 1:
                log.warning("kraken: %s refused its nonce (%s); signing again with a new one",
                            method, first)
                continue
            if first.startswith(_DEADLINE) and attempt == 1:
                offset = await self.sync_time()
                log.warning("kraken: %s arrived past its deadline (%s); clock offset now "
                            "%+.1f s, signing again", method, first, offset)
                continue
            if first.startswith(_RATE):
                try:
                    wait = bucket.block(None, f"said {first!r}")
                except RateLimited:
                    wait = bucket.max_wait
                raise VenueRejected("kraken", f"rate limit reached ({first}); requests wait "
                                    f"{wait:g} s", first)
            if first.startswith(_UNSURE) and changes_state:
                raise AnswerLost(f"kraken: {method} answered {first}; the outcome is unknown")
            raise VenueRejected("kraken", "; ".join(errors), first)
        raise AssertionError("unreachable")

    # -- orders ----------------------------------------------------------------------------------

    @staticmethod
    def _by_id(venue_id: str) -> dict[str, str]:
        return {"txid": venue_id} if TXID.fullmatch(venue_id) else {"cl_ord_id": venue_id}

    def _remember(self, txid: str, venue_id: str) -> None:
        self._cl[txid] = venue_id
        self._txid[venue_id] = txid

    async def place(self, spec: OrderSpec) -> VenueOrder:
        inst = self._inst[spec.symbol]
        rules = self._rules[spec.symbol]
        params: dict[str, Any] = {"ordertype": _TYPE[spec.order_type], "type": spec.side,
                                  "volume": step_str(spec.size, rules.lot_size),
                                  "pair": inst.rest_symbol, "cl_ord_id": spec.venue_id}
        if spec.order_type in ("stop", "stop_limit"):
            assert spec.stop_price is not None
            params["price"] = step_str(spec.stop_price, rules.tick_size)  # the trigger
            if spec.order_type == "stop_limit":
                assert spec.limit_price is not None
                params["price2"] = step_str(spec.limit_price, rules.tick_size)
        elif spec.order_type == "limit":
            assert spec.limit_price is not None
            params["price"] = step_str(spec.limit_price, rules.tick_size)
        if spec.order_type != "market" and spec.tif != "GTC":
            params["timeinforce"] = spec.tif
        if spec.post_only and spec.order_type == "limit":
            params["oflags"] = "post"
        result = await self._call("AddOrder", params, changes_state=True)
        try:
            txid = str(result["txid"][0])
        except (KeyError, IndexError, TypeError):
            raise AnswerLost("kraken: AddOrder answered without a txid; the outcome is "
                             "unknown") from None
        self._remember(txid, spec.venue_id)
        return VenueOrder(venue_id=spec.venue_id, symbol=spec.symbol, side=spec.side,
                          status="new", size=spec.size, filled=0.0,
                          order_type=spec.order_type, limit_price=spec.limit_price,
                          stop_price=spec.stop_price, order_id=txid)

    async def cancel(self, venue_id: str, symbol: str) -> VenueOrder | None:
        try:
            await self._call("CancelOrder", self._by_id(venue_id), changes_state=True)
        except VenueRejected as exc:
            if str(exc.code).startswith(_UNKNOWN):
                return None
            raise
        return await self.query(venue_id, symbol)

    def _view(self, txid: str, info: Any) -> VenueOrder | None:
        if not isinstance(info, dict):
            return None
        descr = info.get("descr") if isinstance(info.get("descr"), dict) else {}
        symbol = self._name.get(str(descr.get("pair")))
        if symbol is None:
            return None
        vo = order_view(txid, info, symbol)
        if info.get("cl_ord_id"):
            self._remember(txid, vo.venue_id)
        return vo

    async def query(self, venue_id: str, symbol: str) -> VenueOrder | None:
        txid = venue_id if TXID.fullmatch(venue_id) else self._txid.get(venue_id)
        if txid is not None:
            try:
                result = await self._call("QueryOrders", {"txid": txid},
                                          changes_state=False)
            except VenueRejected as exc:
                if str(exc.code).startswith(_UNKNOWN):
                    return None
                raise
            return self._view(txid, (result or {}).get(txid))
        for method, key in (("OpenOrders", "open"), ("ClosedOrders", "closed")):
            result = await self._call(method, {"cl_ord_id": venue_id}, changes_state=False)
            rows = (result or {}).get(key) or {}
            found = [(float(info.get("opentm") or 0), t, info) for t, info in rows.items()
                     if isinstance(info, dict) and info.get("cl_ord_id") == venue_id]
            if found:
                _, t, info = max(found, key=lambda r: r[0])  # the newest of that id
                return self._view(t, info)
        return None

    async def open_orders(self, symbols: list[str]) -> list[VenueOrder]:
        result = await self._call("OpenOrders", {}, changes_state=False)
        out = []
        for txid, info in ((result or {}).get("open") or {}).items():
            vo = self._view(txid, info)
            if vo is not None and vo.symbol in symbols:
                out.append(vo)
        return out

    async def fills(self, symbol: str, since: float) -> list[VenueFill]:
        rows: dict[str, dict] = {}
        while True:
            # `start` is exclusive: a millisecond early keeps a fill made exactly at `since`.
            result = await self._call("TradesHistory", {"start": f"{since - 0.001:.4f}",
                                                        "ofs": len(rows)},
                                      changes_state=False, cost=2)
            page = (result or {}).get("trades") or {}
            rows.update({t: r for t, r in page.items() if isinstance(r, dict)})
            if not page or len(rows) >= int((result or {}).get("count") or 0):
                break
        mine = {t: r for t, r in rows.items() if self._name.get(str(r.get("pair"))) == symbol}
        unknown = sorted({str(r.get("ordertxid")) for r in mine.values()} - set(self._cl))
        for k in range(0, len(unknown), PAGE):
            result = await self._call("QueryOrders", {"txid": ",".join(unknown[k:k + PAGE])},
                                      changes_state=False)
            for txid, info in (result or {}).items():
                self._view(txid, info)
        out = [trade_fill(t, r, symbol, self._cl.get(str(r.get("ordertxid")),
                                                     str(r.get("ordertxid"))))
               for t, r in mine.items()]
        out.sort(key=lambda f: (f.time, f.trade_id))
        return out

    async def balances(self) -> dict[str, Balance]:
        result = await self._call("BalanceEx", {}, changes_state=False)
        return balances(result if isinstance(result, dict) else {}, self._assets)

    # -- the executions stream -------------------------------------------------------------------

    async def private_stream(self, hooks: StreamHooks) -> None:
        result = await self._call("GetWebSocketsToken", {}, changes_state=False)
        token = (result or {}).get("token")
        if not isinstance(token, str) or not token:
            raise TradingError("kraken: GetWebSocketsToken answered without a token")
        try:
            async with open_ws(self.ws_auth_url, self.connect_timeout) as ws:
                await self._subscribe(ws, token)
                await hooks.on_connected()
                await self._listen(ws, hooks)
        except (ConnectionClosed, HandshakeError, trio.TooSlowError, OSError,
                ValueError) as exc:
            raise TradingError(f"kraken: executions stream lost ({type(exc).__name__})") \
                from None

    async def _subscribe(self, ws: Any, token: str) -> None:
        await ws.send_message(json.dumps({"method": "subscribe", "req_id": 1, "params": {
            "channel": "executions", "token": token, "snap_orders": True,
            "snap_trades": False}}))
        with trio.fail_after(self.connect_timeout):
            while True:
                answer = json.loads(await ws.get_message())
                if isinstance(answer, dict) and answer.get("method") == "subscribe":
                    break
        if answer.get("success") is not True:
            raise TradingError(f"kraken: executions stream refused: "
                               f"{str(answer.get('error'))[:200]}")

    async def _listen(self, ws: Any, hooks: StreamHooks) -> None:
        last = trio.current_time()
        pings = 0
        while True:
            with trio.move_on_after(self.stale_after / 2) as quiet:
                raw = await ws.get_message()
            if quiet.cancelled_caught:
                if trio.current_time() - last >= self.stale_after:
                    raise TradingError(f"kraken: executions stream silent for "
                                       f"{self.stale_after:g} s")
                pings += 1
                await ws.send_message(json.dumps({"method": "ping", "req_id": 100 + pings}))
                continue
            last = trio.current_time()
            msg = json.loads(raw)
            if not isinstance(msg, dict) or msg.get("channel") != "executions":
                continue
            for item in msg.get("data") or []:
                ex = self._execution(item) if isinstance(item, dict) else None
                if ex is not None:
                    hooks.on_execution(ex)

    def _execution(self, item: dict) -> Execution | None:
        txid = str(item.get("order_id", ""))
        known = self._known.setdefault(txid, {})
        if txid in self._cl and "cl_ord_id" not in known:
            known["cl_ord_id"] = self._cl[txid]
        symbol = self._name.get(str(item.get("symbol") or known.get("symbol")))
        if symbol is None:
            return None  # another pair's order: not this session's
        inst = self._inst[symbol]
        ex = execution(known, item, symbol, inst.base, inst.quote, self.now(), log.warning)
        if known.get("cl_ord_id"):
            self._remember(txid, str(known["cl_ord_id"]))
        if ex.order is not None and ex.order.done:
            self._known.pop(txid, None)
        return ex
