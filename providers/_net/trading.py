"""Helpers the venues' trading adapters share: exact decimal strings for sizes and prices, the
SymbolRules of an instrument, and a private websocket that is closed whatever happens. No keys.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from engine.clearing.venue_api import SymbolRules

from .instruments import Instrument

__all__ = ["step_str", "rules_of"]


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
