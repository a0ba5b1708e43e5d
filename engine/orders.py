"""Order commands a strategy issues: typed, frozen messages that any broker (paper or live) takes.

Commands are imperative (`SubmitOrder`, `CancelOrder`); the events a broker answers with live
beside the clearing code. This module holds no matching or accounting logic.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SubmitOrder", "market_order", "CancelOrder", "ModifyOrder", "OrderSide", "OrderType", "TimeInForce",
    "new_client_id", "AccountOpened", "OrderAccepted", "OrderRejected", "OrderTriggered",
    "OrderFilled", "OrderModified", "OrderCancelled", "LinkOrders", "OrdersLinked",
    "LedgerEvent",
]

OrderSide = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["GTC", "IOC", "FOK", "DAY"]

_ids = itertools.count(1)


def new_client_id(prefix: str = "o") -> str:
    """A client order id unique within this process."""
    return f"{prefix}{next(_ids)}"


class SubmitOrder(BaseModel):
    """Place an order. Sizes are in units of the instrument; prices in its quote currency.

    The size is `size` units, or, with `equity_fraction` in its place, that fraction of the
    equity available (equity less the margin its positions use), resolved when the order first
    fills: whole lots at the fill price with the fee included (backtesting.py's
    `buy(size=0.95)`). Until then `size` is None; a broker that must send a size (a live venue)
    resolves it when placing the order and records both.

    Protection for an entry (each optional): a stop-loss at `stop_loss` (a price) or
    `stop_loss_pct` (a fraction of the average entry price away from it), a take-profit at
    `take_profit` or `take_profit_pct`, or, in place of the stop-loss, a trailing stop `trail`
    (price units) or `trail_pct` (a fraction) behind the best price since the entry. They go
    live as the entry fills (partial fills grow them), cancel each other, and are cancelled when
    the position is closed another way."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["submit_order"] = "submit_order"
    client_id: str = Field(default_factory=new_client_id)
    symbol: str = Field(min_length=1)
    side: OrderSide
    size: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    equity_fraction: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    order_type: OrderType = "market"
    limit_price: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    stop_price: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    tif: TimeInForce = "GTC"
    reduce_only: bool = False
    post_only: bool = False  # a limit order that only rests (maker); refused if it would take
    time: float | None = None  # epoch seconds when the strategy placed it (engine clock)
    strategy: str | None = None
    stop_loss: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    stop_loss_pct: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)
    take_profit: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    take_profit_pct: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    trail: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    trail_pct: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)

    @property
    def protected(self) -> bool:
        """Whether the order carries a stop-loss, take-profit or trailing stop."""
        # Read on every order's way to the book: plain tests, no generator.
        return (self.stop_loss is not None or self.stop_loss_pct is not None
                or self.take_profit is not None or self.take_profit_pct is not None
                or self.trail is not None or self.trail_pct is not None)

    @property
    def units(self) -> float:
        """The size in units: 0 while an equity-fraction order is unresolved."""
        return self.size or 0.0

    @model_validator(mode="after")
    def _one_stop(self) -> SubmitOrder:
        if self.size is None and self.equity_fraction is None:
            raise ValueError("an order needs a size (units) or an equity_fraction")
        if self.equity_fraction is not None and self.reduce_only:
            raise ValueError("a reduce-only order closes a position: size it in units, not as "
                             "a fraction of equity")
        stops = [n for n in ("stop_loss", "stop_loss_pct", "trail", "trail_pct")
                 if getattr(self, n) is not None]
        if len(stops) > 1:
            raise ValueError(f"one protective stop per order: got {' and '.join(stops)}")
        if self.take_profit is not None and self.take_profit_pct is not None:
            raise ValueError("take_profit and take_profit_pct: give one")
        if self.protected and self.reduce_only:
            raise ValueError("a reduce-only order closes a position: it takes no protection")
        if self.post_only and (self.order_type != "limit" or self.tif in ("IOC", "FOK")):
            raise ValueError("post_only is for a resting limit order (GTC or DAY), got a "
                             f"{self.tif} {self.order_type} order")
        return self

    @model_validator(mode="before")
    @classmethod
    def _prices_match_type(cls, data: object) -> object:
        # On raw input only: an order already built (nested in an event) was checked then.
        if not isinstance(data, dict):
            return data
        kind = data.get("order_type", "market")
        needs_limit = kind in ("limit", "stop_limit")
        needs_stop = kind in ("stop", "stop_limit")
        if needs_limit != (data.get("limit_price") is not None):
            raise ValueError(f"a {kind} order {'needs' if needs_limit else 'takes no'} limit_price")
        if needs_stop != (data.get("stop_price") is not None):
            raise ValueError(f"a {kind} order {'needs' if needs_stop else 'takes no'} stop_price")
        return data

    def describe(self) -> str:
        price = "at market"
        if self.stop_price is not None:
            price = f"stop {self.stop_price:g}"
        if self.limit_price is not None:
            price = f"{price} limit {self.limit_price:g}" if self.stop_price else f"limit {self.limit_price:g}"
        size = (f"{self.size:g}" if self.size is not None
                else f"{self.equity_fraction * 100:.4g}% of equity in")
        return f"{self.side.upper()} {size} {self.symbol} {price} {self.tif} [{self.client_id}]"


# The fields a plain market order sets, one set shared by every such order: pydantic copies
# a model's set before changing it (`model_copy`), and a set is 700 bytes an order otherwise.
_SUBMIT_FIELDS_SET = {"client_id", "symbol", "side", "size", "order_type", "limit_price",
                      "stop_price", "tif", "reduce_only", "post_only", "time", "strategy"}
_new_object = object.__new__
_set_attr = object.__setattr__


def market_order(client_id: str, symbol: str, side: OrderSide, size: float, reduce_only: bool,
                 time: float | None, strategy: str | None) -> SubmitOrder:
    """A GTC market order for `size` units, built without validation: for orders the engine
    composes itself from checked parts (`side` "buy" or "sell", `size` a finite float above 0,
    `symbol` one the run trades). Equal, field for field, to `SubmitOrder(...)` of the same
    arguments, for a fifth of the cost on a replay's order path."""
    order = _new_object(SubmitOrder)
    _set_attr(order, "__dict__", {
        "type": "submit_order", "client_id": client_id, "symbol": symbol, "side": side,
        "size": size, "equity_fraction": None, "order_type": "market", "limit_price": None,
        "stop_price": None, "tif": "GTC", "reduce_only": reduce_only, "post_only": False,
        "time": time, "strategy": strategy, "stop_loss": None, "stop_loss_pct": None,
        "take_profit": None, "take_profit_pct": None, "trail": None, "trail_pct": None})
    _set_attr(order, "__pydantic_fields_set__", _SUBMIT_FIELDS_SET)
    _set_attr(order, "__pydantic_extra__", None)
    _set_attr(order, "__pydantic_private__", None)
    return order


class CancelOrder(BaseModel):
    """Cancel a working order by its client id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["cancel_order"] = "cancel_order"
    client_id: str
    symbol: str | None = None
    time: float | None = None
    strategy: str | None = None


class ModifyOrder(BaseModel):
    """Change the size and/or prices of a working order (the parts left as None stay)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["modify_order"] = "modify_order"
    client_id: str
    size: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    limit_price: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    stop_price: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    time: float | None = None
    strategy: str | None = None


# -- events: what a broker answers, in the order it happens ------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    time: float  # epoch seconds, engine clock
    account: str = ""


class AccountOpened(_Event):
    """First record of an account's ledger: its starting cash. `venue` names the venue of a
    live account ("binance", "kraken"); empty for a paper account."""

    type: Literal["account_opened"] = "account_opened"
    cash: float
    currency: str = "USD"
    venue: str = ""


class OrderAccepted(_Event):
    """The order passed risk checks and is working (it reaches the book after any latency)."""

    type: Literal["order_accepted"] = "order_accepted"
    order: SubmitOrder

    @property
    def client_id(self) -> str:
        return self.order.client_id


class OrderRejected(_Event):
    """The order never reached the book; `reason` says why in words a trader reads."""

    type: Literal["order_rejected"] = "order_rejected"
    client_id: str
    symbol: str
    reason: str


class OrderTriggered(_Event):
    """A stop order's trigger price was reached; it now works as a market or limit order."""

    type: Literal["order_triggered"] = "order_triggered"
    client_id: str
    symbol: str
    price: float


class OrderFilled(_Event):
    """A fill (whole or partial). `size` is positive; `side` says the direction."""

    type: Literal["order_filled"] = "order_filled"
    fill_id: int
    client_id: str
    symbol: str
    side: OrderSide
    price: float
    size: float
    fee: float
    liquidity: Literal["maker", "taker"]
    remaining: float  # size of the order still working after this fill

    @property
    def signed_size(self) -> float:
        return self.size if self.side == "buy" else -self.size


class OrderModified(_Event):
    type: Literal["order_modified"] = "order_modified"
    client_id: str
    size: float
    limit_price: float | None = None
    stop_price: float | None = None


class LinkOrders(BaseModel):
    """Make two working orders one-cancels-the-other: the first fill of either cancels the
    other."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["link_orders"] = "link_orders"
    client_ids: tuple[str, str]
    time: float | None = None
    strategy: str | None = None


class OrdersLinked(_Event):
    """Two working orders became one-cancels-the-other."""

    type: Literal["orders_linked"] = "orders_linked"
    client_ids: tuple[str, str]


class OrderCancelled(_Event):
    """The order stopped working with `remaining` unfilled: by the user, its time in force, or
    expiry (`reason`)."""

    type: Literal["order_cancelled"] = "order_cancelled"
    client_id: str
    symbol: str
    remaining: float
    reason: str = "cancelled"


# One record of an account's ledger; the literal `type` field picks the model when decoding.
LedgerEvent = Annotated[
    AccountOpened | OrderAccepted | OrderRejected | OrderTriggered | OrderFilled | OrderModified
    | OrderCancelled | OrdersLinked,
    Field(discriminator="type"),
]
