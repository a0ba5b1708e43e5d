"""The contract between a venue's adapter (Binance, Kraken) and the shared resilient stream.

An adapter knows its venue's websocket subscription frames, how to parse a frame into
venue-neutral events, and how to page through the venue's recent trades over REST. Everything
about connections, staleness, reconnects, deduplication and gap replay is the stream's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .events import Book, Event, Trade
from .http import HttpClient
from .instruments import Instrument, InstrumentTable
from .limits import RateLimiter
from .options import Option

__all__ = ["Venue", "SymbolState"]


@dataclass
class SymbolState:
    """What the stream knows of one instrument: the last trade delivered, the book, and the
    requested names it is delivered under."""

    venue_symbol: str
    rest_symbol: str
    names: list[str]
    inst: Instrument | None = None
    last_id: int | None = None  # venue id of the last trade delivered (or the start baseline)
    last_time: float | None = None  # its time, epoch seconds
    cursor: int | None = None  # the venue's paging hint for it (Binance's aggregate id)
    last_price: float | None = None
    book: Book | None = None
    # (first_id, last_id, size) of recent trades, to split an aggregate that straddles the
    # last delivered trade. 4096 covers any burst sharing one millisecond and price.
    recent: deque[tuple[int, int, float]] = field(default_factory=lambda: deque(maxlen=4096))

    def admit(self, trade: Trade) -> Trade | None:
        """Return `trade` trimmed to what was not delivered yet, or None if all of it was.

        Does not change the state: call `commit` once the trade is sent.
        """
        if self.last_id is None or trade.first_id > self.last_id:
            return trade
        if trade.last_id <= self.last_id:
            return None
        # An aggregate whose first prints were delivered one by one: send the rest of it.
        seen = sum(size for first, last, size in self.recent
                   if first >= trade.first_id and last <= self.last_id)
        rest = trade.size - seen
        if rest <= trade.size * 1e-9:
            return None
        return Trade(self.last_id + 1, trade.last_id, trade.price, rest, trade.time, trade.side,
                     trade.cursor)

    def commit(self, trade: Trade) -> None:
        """Record `trade` as delivered."""
        self.last_id = trade.last_id
        self.last_time = trade.time
        self.last_price = trade.price
        # Valid only while the last delivered trade is a venue aggregate (replayed, or from an
        # aggregate stream); a plain live print moves past it.
        self.cursor = trade.cursor
        self.recent.append((trade.first_id, trade.last_id, trade.size))

    def set_baseline(self, trade: Trade) -> None:
        """Start from `trade` (the venue's latest print at start-up), without delivering it."""
        self.commit(trade)
        self.recent.clear()


class Venue(ABC):
    """A venue adapter, built from the provider's parsed options. `name` appears in every log
    line and error; `OPTIONS` is the option spec `configure()` accepts."""

    name: str
    OPTIONS: dict[str, Option]

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    # -- REST ------------------------------------------------------------------------------

    @abstractmethod
    def make_limiter(self) -> RateLimiter:
        """Return the rate limiter every REST request to this venue shares."""

    @abstractmethod
    async def load_instruments(self, http: HttpClient) -> InstrumentTable:
        """Fetch the venue's instrument list (exchange info)."""

    @abstractmethod
    async def first_quotes(self, http: HttpClient, states: list[SymbolState]) -> None:
        """Fetch each instrument's top of book and latest trade into its state (the latter as
        the baseline the stream replays gaps from)."""

    @abstractmethod
    def history(self, http: HttpClient, inst: Instrument, count: int
                ) -> AsyncGenerator[np.ndarray, None]:
        """Yield up to `count` frames of closed bars (ohlc_dtype rows, ascending), newest frame
        first, each older than the one before."""

    # -- websocket ---------------------------------------------------------------------------

    @abstractmethod
    def ws_endpoint(self, states: list[SymbolState]) -> str:
        """Return the websocket URL to connect to for `states`."""

    @abstractmethod
    def subscribe_frames(self, states: list[SymbolState]) -> list[str]:
        """Return the text frames that subscribe to trades and top of book for `states`."""

    @abstractmethod
    def acks_expected(self, states: list[SymbolState]) -> int:
        """Return how many positive subscription answers mean every subscription is live."""

    @abstractmethod
    def parse(self, frame: str | bytes) -> list[Event]:
        """Parse one websocket frame; raise MalformedFrame saying what is wrong with it."""

    @abstractmethod
    def gap_cursor(self, state: SymbolState) -> Any:
        """Return the REST paging cursor for the trades after `state`'s last delivered one."""

    @abstractmethod
    async def trade_page(self, http: HttpClient, state: SymbolState, cursor: Any,
                         horizon: float | None) -> tuple[list[Trade], Any, bool]:
        """Fetch one page of trades at `cursor`, in id order.

        Return the trades, the cursor that continues after them, and whether the venue may
        have more right now. `horizon` (epoch seconds) is the newest time worth fetching, when
        known (the first live trade after a reconnect).
        """
