"""Helpers the venues' trading adapters share: exact decimal strings for sizes and prices, the
SymbolRules of an instrument, and what a private request's transport failures mean for an order.
No keys.
"""

from __future__ import annotations

from collections.abc import Awaitable
from decimal import ROUND_HALF_EVEN, Decimal

from engine.clearing.venue_api import AnswerLost, SymbolRules, TradingError, VenueRejected

from .errors import RateLimited, VenueUnreachable
from .http import RequestLost, Response
from .instruments import Instrument

__all__ = ["step_str", "rules_of", "send_private"]


async def send_private(venue: str, what: str, request: Awaitable[Response], *,
                       changes_state: bool) -> Response:
    """Await one private `request` and return the venue's answer below HTTP 500.
    A request whose answer was lost, or a 5xx, raises AnswerLost when it could have changed
    state (the caller settles it by looking the order up, never by sending again), else
    TradingError; the venue's rate limit raises VenueRejected in its words."""
    try:
        resp = await request
    except RequestLost as exc:
        if changes_state:
            raise AnswerLost(str(exc)) from None
        raise TradingError(str(exc)) from None
    except RateLimited as exc:
        raise VenueRejected(venue, str(exc).removeprefix(f"{venue} ")) from None
    except VenueUnreachable as exc:
        raise TradingError(str(exc)) from None
    if resp.status >= 500:
        if changes_state:
            raise AnswerLost(f"{venue}: {what} answered HTTP {resp.status}; the outcome is "
                             "unknown")
        raise TradingError(f"{venue}: {what} answered HTTP {resp.status}")
    return resp


def step_str(value: float, step: float) -> str:
    """`value` rounded to the nearest multiple of `step`, as a plain decimal string with the
    step's decimals ("0.00012000" style noise removed): what a venue's filter accepts."""
    if step <= 0:
        return format(Decimal(repr(value)).normalize(), "f")
    q = Decimal(repr(step)).normalize()
    n = (Decimal(repr(value)) / q).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    out = (n * q).quantize(q) if q.as_tuple().exponent < 0 else n * q
    return format(out, "f")


def rules_of(name: str, inst: Instrument) -> SymbolRules:
    """The filters of `inst`, under the engine's name for it."""
    return SymbolRules(symbol=name, base=inst.base, quote=inst.quote, tick_size=inst.tick_size,
                       lot_size=inst.lot_size, min_size=inst.min_size,
                       min_notional=inst.min_notional)
