"""Reading one value out of decoded venue JSON, validated: prices, sizes, ids, times, and the top
of book as a whole. Every failure is a MalformedFrame naming the field and what is wrong with it.

Shared by the venue parsers so that Binance and Kraken accept and refuse the same things: a
price is finite, positive and below engine.plausible.MAX_PRICE; a size is finite and in
0..MAX_SIZE; an id is an integer in 0..2**63-1; a time lies between 1970 and the end of next
year; a book with both sides is not crossed (bid < ask). No I/O.
"""

from __future__ import annotations

import math
from typing import Any

from engine.plausible import MAX_ID, price_problem, size_problem, time_problem

from .errors import MalformedFrame
from .events import Book

__all__ = ["number", "price", "size", "ident", "epoch_ms", "epoch_s", "plausible_time",
           "check_book", "field"]

def field(data: Any, key: Any, what: str, symbol: str | None) -> Any:
    """Return `data[key]` (an object's field or an array's element) or raise naming it."""
    try:
        return data[key]
    except (KeyError, IndexError, TypeError):
        raise MalformedFrame(f"{what} has no field {key!r}", symbol,
                             kind=f"{what} has no field {key!r}") from None


def number(data: Any, key: Any, what: str, symbol: str | None) -> float:
    """Return field `key` as a float: a JSON number or a decimal string, never a bool."""
    value = field(data, key, what, symbol)
    kind = f"{what} field {key!r} is not a number"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedFrame(f"{kind}: {_show(value)}", symbol, kind=kind)
    try:
        return float(value)
    except (ValueError, OverflowError):
        # OverflowError: an integer too large for a float (JSON allows 400 digits).
        raise MalformedFrame(f"{kind}: {_show(value)}", symbol, kind=kind) from None


def price(data: Any, key: Any, what: str, symbol: str | None, *, empty_zero: bool = False
          ) -> float | None:
    """Return field `key` as a price; with `empty_zero`, 0 means an empty book side (None)."""
    value = number(data, key, what, symbol)
    if empty_zero and value == 0:
        return None
    _check(price_problem(value), data, key, what, symbol)
    return value


def size(data: Any, key: Any, what: str, symbol: str | None) -> float:
    """Return field `key` as a size or volume (>= 0)."""
    value = number(data, key, what, symbol)
    _check(size_problem(value), data, key, what, symbol)
    return value


def ident(data: Any, key: Any, what: str, symbol: str | None) -> int:
    """Return field `key` as an id or count: an integer in 0..2**63-1 (a digit string too)."""
    value = field(data, key, what, symbol)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        kind = f"{what} field {key!r} is not an integer in 0..2**63-1"
        raise MalformedFrame(f"{kind}: {_show(value)}", symbol, kind=kind)
    return value


def epoch_ms(data: Any, key: Any, what: str, symbol: str | None) -> float:
    """Return field `key`, epoch milliseconds (an integer), as epoch seconds."""
    return plausible_time(ident(data, key, what, symbol) / 1000.0, data[key], what, key, symbol)


def epoch_s(data: Any, key: Any, what: str, symbol: str | None) -> float:
    """Return field `key`, epoch seconds (a number or decimal string), as epoch seconds."""
    return plausible_time(number(data, key, what, symbol), data[key], what, key, symbol)


def plausible_time(t: float, raw: Any, what: str, key: Any, symbol: str | None) -> float:
    """Return `t` (epoch seconds, read from `raw`) if it is a plausible data time, else raise
    naming field `key`."""
    problem = time_problem(t)
    if problem is not None:
        kind = f"{what} field {key!r} is not a plausible time"
        raise MalformedFrame(f"{kind}: {_show(raw)} {problem}", symbol, kind=kind)
    return t


def check_book(book: Book, what: str, symbol: str | None) -> Book:
    """Return `book` unless both sides are present and crossed or locked (bid >= ask)."""
    if book.bid is not None and book.ask is not None and book.bid >= book.ask:
        kind = f"{what} is crossed"
        raise MalformedFrame(f"{kind}: bid {book.bid!r} is not below ask {book.ask!r}", symbol,
                             kind=kind)
    return book


def _check(problem: str | None, data: Any, key: Any, what: str, symbol: str | None) -> None:
    if problem is not None:
        kind = f"{what} field {key!r} is out of range"
        raise MalformedFrame(f"{kind}: {_show(data[key])} {problem}", symbol, kind=kind)


def _show(value: Any, limit: int = 40) -> str:
    """`value` for a message: its repr, cut short (a 400-digit integer, a deep list)."""
    if isinstance(value, list | dict):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**limit:
        return f"an integer of {int(math.log10(abs(value))) + 1} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
