"""Order commands a strategy issues: typed, frozen messages that any broker (paper or live) takes.

Commands are imperative (`SubmitOrder`, `CancelOrder`); the events a broker answers with live
beside the clearing code. This module holds no matching or accounting logic.
"""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SubmitOrder", "CancelOrder", "OrderSide", "OrderType", "TimeInForce", "new_client_id"]

OrderSide = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["GTC", "IOC", "FOK", "DAY"]

_ids = itertools.count(1)


def new_client_id(prefix: str = "o") -> str:
    """A client order id unique within this process."""
    return f"{prefix}{next(_ids)}"


class SubmitOrder(BaseModel):
    """Place an order. Sizes are in units of the instrument; prices in its quote currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["submit_order"] = "submit_order"
    client_id: str = Field(default_factory=new_client_id)
    symbol: str = Field(min_length=1)
    side: OrderSide
    size: float = Field(gt=0, allow_inf_nan=False)
    order_type: OrderType = "market"
    limit_price: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    stop_price: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    tif: TimeInForce = "GTC"
    reduce_only: bool = False
    time: float | None = None  # epoch seconds when the strategy placed it (engine clock)
    strategy: str | None = None

    @model_validator(mode="after")
    def _prices_match_type(self) -> SubmitOrder:
        needs_limit = self.order_type in ("limit", "stop_limit")
        needs_stop = self.order_type in ("stop", "stop_limit")
        if needs_limit != (self.limit_price is not None):
            raise ValueError(f"a {self.order_type} order {'needs' if needs_limit else 'takes no'} limit_price")
        if needs_stop != (self.stop_price is not None):
            raise ValueError(f"a {self.order_type} order {'needs' if needs_stop else 'takes no'} stop_price")
        return self

    def describe(self) -> str:
        price = "at market"
        if self.stop_price is not None:
            price = f"stop {self.stop_price:g}"
        if self.limit_price is not None:
            price = f"{price} limit {self.limit_price:g}" if self.stop_price else f"limit {self.limit_price:g}"
        return f"{self.side.upper()} {self.size:g} {self.symbol} {price} {self.tif} [{self.client_id}]"


class CancelOrder(BaseModel):
    """Cancel a working order by its client id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["cancel_order"] = "cancel_order"
    client_id: str
    symbol: str | None = None
    time: float | None = None
    strategy: str | None = None
