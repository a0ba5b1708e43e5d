"""The quote and tick messages of the provider spec, as typed models checked at the boundary.

Providers send plain dicts (cheap to build at 100k+ per second); the feed validates them here
before anything downstream trusts them. A failure names the provider, the symbol and the field.
This module never does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TickType = Literal["trade", "bid", "ask", "bsize", "asize", "utrade", "dark_trade"]

__all__ = ["Tick", "Quote", "QuoteError", "validate_quote", "TickType",
           "FeedStatusChanged", "FEED_STATUSES"]

# What a provider may report about its connection, on the quote channel, as
# {"feed_status": <one of these>, "symbols": [...] (default: all), "reason": "...", "time": t}.
# "disconnected" and "stale" hold bar closing by the clock for those symbols (silence from a
# broken source is not a quiet market); "reconnected" and "gap_filled" release it. A provider
# fills a gap by sending the missed trades as ordinary quotes, in time order, before live ones.
FEED_STATUSES = ("disconnected", "stale", "reconnected", "gap_filled")


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value}")
    return value


class Tick(BaseModel):
    """One tick inside a quote: a print or a top-of-book change. Prices and sizes are floats."""

    # Providers may attach venue fields (trade ids, ...); they pass through untouched.
    model_config = ConfigDict(frozen=True, extra="allow")

    type: TickType
    price: float
    size: float = Field(default=0.0, ge=0.0)
    time: float | None = Field(default=None, gt=0.0)

    @field_validator("price")
    @classmethod
    def _price_finite(cls, v: float) -> float:
        return _finite(v, "price")

    @field_validator("size")
    @classmethod
    def _size_finite(cls, v: float) -> float:
        return _finite(v, "size")


class Quote(BaseModel):
    """A normalized quote message: the symbol as requested, the last price, ticks."""

    # SPEC: other keys (bid, ask, volume, ...) are allowed and passed through.
    model_config = ConfigDict(frozen=True, extra="allow")

    symbol: str = Field(min_length=1)
    last: float | None = None
    time: float | None = Field(default=None, gt=0.0)
    ticks: list[Tick] = Field(default_factory=list)

    @field_validator("last")
    @classmethod
    def _last_finite(cls, v: float | None) -> float | None:
        return None if v is None else _finite(v, "last")


class FeedStatusChanged(BaseModel):
    """An event a strategy receives in `on_feed_status` when a provider's connection changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["feed_status_changed"] = "feed_status_changed"
    provider: str
    status: Literal["disconnected", "stale", "reconnected", "gap_filled"]
    symbols: list[str]
    reason: str = ""
    time: float | None = None


class QuoteError(ValueError):
    """A provider sent a quote that breaks the spec."""

    def __init__(self, provider: str, symbol: str, field: str, reason: str) -> None:
        self.provider = provider
        self.symbol = symbol
        self.field = field
        self.reason = reason
        super().__init__(
            f"provider {provider!r} sent a bad quote for {symbol!r}: field {field!r}: {reason}"
        )


def _field_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<message>"


def validate_quote(
    msg: Any,
    provider: str,
    symbols: Iterable[str] | None = None,
    *,
    require_last: bool = False,
) -> Quote:
    """Check one quote message against the spec; raise `QuoteError` naming what is wrong."""
    if not isinstance(msg, dict):
        raise QuoteError(provider, "?", "<message>", f"expected a dict, got {type(msg).__name__}")
    symbol = msg.get("symbol")
    shown = symbol if isinstance(symbol, str) else "?"
    try:
        quote = Quote.model_validate(msg)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise QuoteError(provider, shown, _field_path(err["loc"]), err["msg"]) from None
    if symbols is not None and quote.symbol not in symbols:
        raise QuoteError(provider, shown, "symbol", "not one of the requested symbols")
    if require_last and quote.last is None:
        raise QuoteError(provider, shown, "last", "the first quote of a symbol must carry 'last'")
    return quote
