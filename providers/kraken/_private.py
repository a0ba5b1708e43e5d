"""Kraken's private formats, read into the venue-neutral records of engine/clearing/venue_api.py:
REST order info (OpenOrders, ClosedOrders, QueryOrders), TradesHistory rows, BalanceEx, and
websocket v2 `executions` reports. Pure functions over decoded JSON; no I/O, no clock, no keys.

Field names are Kraken's documented ones (docs.kraken.com: Spot REST "Get Open Orders", "Get
Trades History", "Get Extended Balance"; Spot WebSocket v2 "executions"). An order is named by
its `cl_ord_id` (the engine's client order id) when it has one, else by Kraken's txid.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from engine.clearing.venue_api import Balance, Execution, OrderStatus, VenueFill, VenueOrder

from ._parse import V2_ASSETS, rfc3339

__all__ = ["TXID", "order_view", "trade_fill", "execution", "balances", "asset_name",
           "trade_number"]

# Kraken order ids: "OQCLML-BW3P3-BUCMWZ" (six, five and six characters).
TXID = re.compile(r"O[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{6}")
# AddOrder's order types and the engine's.
ENGINE_TYPE = {"market": "market", "limit": "limit", "stop-loss": "stop",
               "stop-loss-limit": "stop_limit"}
# websocket v2 order_status -> the engine's
_WS_STATUS: dict[str, OrderStatus] = {
    "pending_new": "new", "new": "new", "partially_filled": "partially_filled",
    "filled": "filled", "canceled": "cancelled", "expired": "expired"}
# exec_type, for a report that does not carry order_status
_EXEC_STATUS: dict[str, OrderStatus] = {
    "canceled": "cancelled", "expired": "expired", "filled": "filled",
    "trade": "partially_filled"}


def num(x: Any) -> float:
    try:
        return float(x) if x not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


def trade_number(trade_id: Any, txid: Any) -> int:
    """The venue trade id as an int: Kraken's `trade_id` (unique per pair), or a stable hash of
    the trade's txid when a row lacks it."""
    if isinstance(trade_id, int) and not isinstance(trade_id, bool):
        return trade_id
    if isinstance(trade_id, str) and trade_id.isdigit():
        return int(trade_id)
    digest = hashlib.blake2b(str(txid).encode(), digest_size=7).digest()
    return int.from_bytes(digest, "big")


def asset_name(code: str) -> str:
    """The common name of a Kraken asset code: "XXBT" -> "BTC", "ZUSD" -> "USD", "DOT" -> "DOT"."""
    code = code.upper()
    if len(code) == 4 and code[0] in "XZ":
        code = code[1:]
    return V2_ASSETS.get(code, code)


def _status(kraken: str, size: float, filled: float) -> OrderStatus:
    if kraken in ("pending", "open"):
        return "partially_filled" if filled > 0 else "new"
    if kraken == "closed":
        # Closed with something left: the rest was taken off the book (IOC, a market order
        # that ran out of liquidity).
        return "filled" if filled >= size * (1 - 1e-9) else "expired"
    if kraken == "canceled":
        return "cancelled"
    return "expired"


def order_view(txid: str, info: dict, symbol: str) -> VenueOrder:
    """A REST order info object (the value under its txid) as a VenueOrder in `symbol`."""
    descr = info.get("descr") if isinstance(info.get("descr"), dict) else {}
    kind = ENGINE_TYPE.get(str(descr.get("ordertype")), "limit")
    size, filled = num(info.get("vol")), num(info.get("vol_exec"))
    first, second = num(descr.get("price")) or None, num(descr.get("price2")) or None
    limit, stop = {"market": (None, None), "limit": (first, None), "stop": (None, first),
                   "stop_limit": (second, first)}[kind]
    side = "sell" if descr.get("type") == "sell" else "buy"
    return VenueOrder(venue_id=str(info.get("cl_ord_id") or txid), symbol=symbol,
                      side=side, status=_status(str(info.get("status")), size, filled),
                      size=size, filled=filled, order_type=kind, limit_price=limit,
                      stop_price=stop, order_id=txid, reason=str(info.get("reason") or ""))


def fee_in_quote(amount: float, asset: str, price: float, base: str, quote: str,
                 warn: Callable[[str], None]) -> float:
    """A fee of `amount` `asset` in the quote currency (a fee in the base asset at `price`)."""
    if not amount or asset_name(asset) == quote.upper():
        return amount
    if asset_name(asset) == base.upper():
        return amount * price
    warn(f"kraken: a fee of {amount:g} {asset} is not in {base} or {quote}; the ledger records "
         f"it as 0")
    return 0.0


def trade_fill(txid: str, row: dict, symbol: str, venue_id: str) -> VenueFill:
    """A TradesHistory row (the value under its trade txid) as a VenueFill. Its `fee` is in
    the quote currency, as Kraken reports it."""
    return VenueFill(venue_id=venue_id, symbol=symbol,
                     side="sell" if row.get("type") == "sell" else "buy",
                     trade_id=trade_number(row.get("trade_id"), txid),
                     price=num(row.get("price")), size=num(row.get("vol")),
                     fee=num(row.get("fee")),
                     liquidity="maker" if row.get("maker") is True else "taker",
                     time=num(row.get("time")))


def _time(text: Any, fallback: float) -> float:
    try:
        return rfc3339(text, "executions", None)
    except Exception:  # noqa: BLE001 - MalformedFrame or anything: keep the fallback
        return fallback


def execution(known: dict, item: dict, symbol: str, base: str, quote: str,
              fallback_time: float, warn: Callable[[str], None]) -> Execution:
    """One `executions` report as an Execution. `known` holds what earlier reports of the same
    order said (Kraken leaves out fields that did not change); `item` is merged into it."""
    known.update({k: v for k, v in item.items() if v is not None and k in (
        "cl_ord_id", "symbol", "side", "order_type", "order_qty", "limit_price", "cum_qty",
        "order_status", "triggers", "reason")})
    exec_type = str(item.get("exec_type", ""))
    status = _WS_STATUS.get(str(item.get("order_status")))
    if status is None:
        status = _EXEC_STATUS.get(exec_type) or _WS_STATUS.get(str(known.get("order_status")),
                                                               "new")
    venue_id = str(known.get("cl_ord_id") or item.get("order_id"))
    side = "sell" if known.get("side") == "sell" else "buy"
    kind = ENGINE_TYPE.get(str(known.get("order_type")), "limit")
    trigger = known.get("triggers") if isinstance(known.get("triggers"), dict) else {}
    stop = num(trigger.get("price")) or None
    limit = num(known.get("limit_price")) or None
    reason = str(item.get("reason") or "")
    order = VenueOrder(venue_id=venue_id, symbol=symbol, side=side,  # type: ignore[arg-type]
                       status=status, size=num(known.get("order_qty")),
                       filled=num(known.get("cum_qty")), order_type=kind,
                       limit_price=limit if kind in ("limit", "stop_limit") else None,
                       stop_price=stop if kind in ("stop", "stop_limit") else None,
                       order_id=str(item.get("order_id", "")), reason=reason)
    fill = None
    if exec_type == "trade" and num(item.get("last_qty")) > 0:
        price = num(item.get("last_price"))
        fee = 0.0
        for f in item.get("fees") or []:
            if isinstance(f, dict):
                fee += fee_in_quote(num(f.get("qty")), str(f.get("asset", "")), price, base,
                                    quote, warn)
        fill = VenueFill(venue_id=venue_id, symbol=symbol, side=side,  # type: ignore[arg-type]
                         trade_id=trade_number(item.get("trade_id"), item.get("exec_id")),
                         price=price, size=num(item.get("last_qty")), fee=fee,
                         liquidity="maker" if item.get("liquidity_ind") == "m" else "taker",
                         time=_time(item.get("timestamp"), fallback_time))
    return Execution(venue_id=venue_id, status=status, order=order, fill=fill, reason=reason)


def balances(result: dict, names: dict[str, str]) -> dict[str, Balance]:
    """A BalanceEx result as Balances by common asset name (`names` maps Kraken codes to the
    instruments' names first). Balances held elsewhere (".F" earn, ".B", ".S", ".M") are left
    out: they cannot be traded on the spot book."""
    out: dict[str, Balance] = {}
    for code, row in result.items():
        if "." in code or not isinstance(row, dict):
            continue
        name = names.get(code) or asset_name(code)
        held, hold = num(row.get("balance")), num(row.get("hold_trade"))
        out[name] = Balance(name, held - hold, hold)
    return out
