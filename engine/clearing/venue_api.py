"""What the live broker asks of a venue's trading adapter, and the venue-neutral records it gets.

A provider that can trade exposes `open_trading(...)` (see /work/shared/SPEC.md, "Order entry"),
an async context manager yielding a `TradingSession`. The engine's `VenueBroker` speaks only this
protocol; the provider owns signing, endpoints, formats and the private stream. Sizes are in base
units, prices and fees in the quote currency, times in epoch seconds.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = ["OrderSpec", "VenueOrder", "VenueFill", "Execution", "Balance", "SymbolRules",
           "TradingSession", "VenueRejected", "AnswerLost", "TradingError", "OrderStatus",
           "StreamHooks"]

OrderStatus = Literal["new", "partially_filled", "filled", "cancelled", "rejected", "expired"]
DONE: frozenset[str] = frozenset({"filled", "cancelled", "rejected", "expired"})


class TradingError(RuntimeError):
    """A trading request failed for a reason that is not the venue's verdict on the order
    (network, authentication, rate limit); the message names the venue and never holds a key."""


class VenueRejected(TradingError):
    """The venue answered: it refused the request (insufficient balance, a filter, unknown
    order, rate limit). `reason` is the venue's own words."""

    def __init__(self, venue: str, reason: str, code: int | str | None = None) -> None:
        self.venue, self.reason, self.code = venue, reason, code
        super().__init__(f"{venue}: {reason}")


class AnswerLost(TradingError):
    """A request that may have changed state at the venue got no answer (a dropped connection,
    a timeout, a 5xx): its outcome is unknown and must be found by querying, never by sending
    the request again."""


@dataclass(frozen=True)
class SymbolRules:
    """A symbol's trading filters, from the venue's exchange info: tick size (quote currency),
    lot size and minimum size (base units), minimum notional (quote currency, None: none)."""

    symbol: str
    base: str
    quote: str
    tick_size: float
    lot_size: float
    min_size: float
    min_notional: float | None


@dataclass(frozen=True)
class OrderSpec:
    """One order as it leaves for the venue. `venue_id` is the client order id the venue
    stores (newClientOrderId / cl_ord_id), unique per account and derived from the ledger."""

    venue_id: str
    symbol: str
    side: Literal["buy", "sell"]
    size: float
    order_type: Literal["market", "limit", "stop", "stop_limit"]
    limit_price: float | None = None
    stop_price: float | None = None
    tif: Literal["GTC", "IOC", "FOK", "DAY"] = "GTC"
    post_only: bool = False


@dataclass(frozen=True)
class VenueOrder:
    """An order as the venue reports it."""

    venue_id: str
    symbol: str
    side: Literal["buy", "sell"]
    status: OrderStatus
    size: float
    filled: float
    order_type: str = "limit"
    limit_price: float | None = None
    stop_price: float | None = None
    order_id: str = ""
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.status in DONE


@dataclass(frozen=True)
class VenueFill:
    """One execution of an order. `trade_id` is the venue's id of the trade, unique per symbol,
    as an int (a venue with string ids hashes them); it absorbs duplicate reports."""

    venue_id: str
    symbol: str
    side: Literal["buy", "sell"]
    trade_id: int
    price: float
    size: float
    fee: float  # in the quote currency (a fee charged in another asset is converted)
    liquidity: Literal["maker", "taker"]
    time: float


@dataclass(frozen=True)
class Execution:
    """One private-stream event: an order changed state at the venue, with a fill if it traded."""

    venue_id: str
    status: OrderStatus
    order: VenueOrder | None = None
    fill: VenueFill | None = None
    reason: str = ""


@dataclass(frozen=True)
class Balance:
    asset: str
    free: float
    locked: float

    @property
    def total(self) -> float:
        return self.free + self.locked


@dataclass
class StreamHooks:
    """What a private stream calls: `on_execution` for each event, `on_connected` after every
    (re)subscription, before the events that follow it."""

    on_execution: Callable[[Execution], None]
    on_connected: Callable[[], Awaitable[None]]
    extra: dict = field(default_factory=dict)


class TradingSession(Protocol):
    """A signed connection to one account at one venue."""

    venue: str

    def rules(self, symbol: str) -> SymbolRules:
        """The symbol's filters (exchange info is loaded when the session opens)."""

    async def sync_time(self) -> float:
        """Measure the venue's clock; return its offset from ours (seconds, venue minus ours)."""

    async def place(self, spec: OrderSpec) -> VenueOrder:
        """Send a new order. Raise VenueRejected or AnswerLost (never resend on AnswerLost)."""

    async def cancel(self, venue_id: str, symbol: str) -> VenueOrder | None:
        """Cancel an order; return its final state, or None when the venue does not know it."""

    async def query(self, venue_id: str, symbol: str) -> VenueOrder | None:
        """Look an order up by client id; None when the venue never saw it."""

    async def open_orders(self, symbols: list[str]) -> list[VenueOrder]:
        """Every working order of the account in `symbols`."""

    async def fills(self, symbol: str, since: float) -> list[VenueFill]:
        """The account's fills in `symbol` at or after `since` (epoch seconds), oldest first."""

    async def balances(self) -> dict[str, Balance]:
        """The account's balances by asset (upper case)."""

    async def private_stream(self, hooks: StreamHooks) -> None:
        """Subscribe to the account's private stream and deliver its events until the
        connection drops (then return or raise TradingError) or the caller cancels."""
