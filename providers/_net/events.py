"""What a venue's frame parser hands the resilient stream: trades, top-of-book changes and
control events, venue-neutral. The stream turns them into the spec's quote messages.

Only data classes and the quote-message builders live here: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Trade", "Book", "Control", "Event", "trade_msg", "book_msg"]


@dataclass(slots=True)
class Trade:
    """One print, or a venue's aggregate of prints at one price and moment (Binance aggTrades).

    Trade ids are the venue's own per-instrument sequence; an aggregate covers the prints
    `first_id..last_id`. `cursor` is a venue paging hint (Binance's aggregate trade id).
    """

    first_id: int
    last_id: int
    price: float
    size: float
    time: float  # epoch seconds of the execution
    side: str | None = None  # the aggressor: "buy" or "sell"
    cursor: int | None = None


@dataclass(slots=True)
class Book:
    """Top of book: best bid/ask with sizes (a side may be missing), and venue extras."""

    bid: float | None = None
    bid_size: float | None = None
    ask: float | None = None
    ask_size: float | None = None
    time: float | None = None  # epoch seconds, when the venue stamps it
    seq: int | None = None  # venue update id; an update at or below the last one is dropped
    last: float | None = None  # last trade price, when the venue sends it with the book
    extra: dict[str, Any] = field(default_factory=dict)  # passed through into the quote


@dataclass(frozen=True, slots=True)
class Control:
    """A frame that carries no market data: subscription answers, heartbeats, system status."""

    kind: Literal["ack", "nack", "heartbeat", "status", "ignore"]
    detail: str = ""
    symbol: str | None = None  # the venue symbol it concerns, if any


# A parser returns a list of these: (venue symbol, Trade | Book) or Control.
Event = tuple[str, Trade] | tuple[str, Book] | Control


def trade_msg(symbol: str, trade: Trade, *, replayed: bool = False) -> dict[str, Any]:
    """Return the quote message of one trade for the requested `symbol`."""
    tick: dict[str, Any] = {"type": "trade", "price": trade.price, "size": trade.size,
                            "time": trade.time, "trade_id": trade.last_id}
    if trade.side:
        tick["side"] = trade.side
    if trade.last_id != trade.first_id:
        tick["trades"] = trade.last_id - trade.first_id + 1
    msg: dict[str, Any] = {"symbol": symbol, "last": trade.price, "time": trade.time,
                           "ticks": [tick]}
    if replayed:
        msg["replayed"] = True
    return msg


def book_msg(symbol: str, book: Book, prev: Book | None, last: float | None) -> dict | None:
    """Return the quote message of a top-of-book change, or None when nothing changed.

    A side whose price moved gives a `bid`/`ask` tick; one whose size alone changed gives
    `bsize`/`asize` (the spec's size change at an unchanged price).
    """
    ticks: list[dict[str, Any]] = []
    for kind, px, sz, old_px, old_sz in (
        ("bid", book.bid, book.bid_size, prev and prev.bid, prev and prev.bid_size),
        ("ask", book.ask, book.ask_size, prev and prev.ask, prev and prev.ask_size),
    ):
        if px is None:
            continue
        size = sz if sz is not None else 0.0
        if px != old_px:
            ticks.append({"type": kind, "price": px, "size": size})
        elif sz is not None and sz != old_sz:
            ticks.append({"type": "bsize" if kind == "bid" else "asize", "price": px,
                          "size": size})
    if not ticks:
        return None
    msg: dict[str, Any] = {"symbol": symbol, "ticks": ticks}
    # The trade stream's last price is newer than a ticker's copy of it.
    price = last if last is not None else book.last
    if price is not None:
        msg["last"] = price
    if book.time is not None:
        msg["time"] = book.time
    for key, value in (("bid", book.bid), ("bsize", book.bid_size), ("ask", book.ask),
                       ("asize", book.ask_size)):
        if value is not None:
            msg[key] = value
    msg.update(book.extra)
    return msg
