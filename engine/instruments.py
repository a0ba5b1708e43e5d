"""Instruments: the trading rules of a symbol (lot size, tick size, minimum notional), where they
come from (a venue's symbol info live, the run's settings for file data) and the arithmetic
that applies them to sizes and prices.

Typed models and pure functions only: no I/O, no venue calls. A rule left as None is off: an
instrument nobody described takes any positive size and price, and sizes the engine computes
(orders sized by value or as a fraction of equity) round to whole units.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Instrument", "InstrumentError", "instrument_table", "resolve_instrument",
           "parse_instrument_options", "off_step", "round_to_lot", "EVERY"]

# The key of the rules that apply to every symbol without its own (`--lot 0.001`).
EVERY = "*"
# Relative tolerance of a size or price against its step: float noise, never slack.
_STEP_TOL = 1e-9
_RULES = ("lot_size", "tick_size", "min_notional")


class InstrumentError(ValueError):
    """An instrument setting is wrong; the message names the symbol, the rule and the value."""


class Instrument(BaseModel):
    """One symbol's trading rules. `lot_size`: the size step in units (an explicit order size
    must be a multiple of it; computed sizes round toward zero to it; None: any size is taken,
    computed sizes are whole units). `tick_size`: the price step in quote currency (explicit
    limit and stop prices must be multiples; prices the engine computes, such as a percent
    stop-loss, round to it away from the market; None: any price). `min_notional`: the
    smallest order value, size x price in quote currency (None: no minimum)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str = Field(min_length=1)
    lot_size: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    tick_size: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    min_notional: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @property
    def sizing_lot(self) -> float:
        """The step computed sizes round to: the lot, or 1 unit when the lot is not set."""
        return self.lot_size or 1.0

    def lot_violation(self, size: float) -> str | None:
        """Why an explicit `size` breaks the lot rule (None: it does not)."""
        if self.lot_size is not None and off_step(size, self.lot_size):
            return (f"size {size:g} is not a multiple of {self.symbol}'s lot size "
                    f"{self.lot_size:g} (a lot-size violation: nothing was sent)")
        return None

    def tick_violation(self, name: str, price: float | None) -> str | None:
        """Why an explicit `name` price breaks the tick rule (None: it does not)."""
        if price is not None and self.tick_size is not None and off_step(price, self.tick_size):
            return (f"{name} price {price:g} is not a multiple of {self.symbol}'s tick size "
                    f"{self.tick_size:g}")
        return None

    def notional_violation(self, size: float, price: float) -> str | None:
        """Why an order of `size` at `price` is below the minimum notional (None: it is not)."""
        if self.min_notional and size * price < self.min_notional * (1 - _STEP_TOL):
            return (f"notional {size * price:,.2f} ({size:g} {self.symbol} at {price:g}) is below "
                    f"{self.symbol}'s minimum of {self.min_notional:,.2f}")
        return None


def off_step(value: float, step: float) -> bool:
    """Whether `value` is not a whole multiple of `step` (up to float noise)."""
    n = value / step
    return abs(n - round(n)) > _STEP_TOL * max(1.0, abs(n))


def round_to_lot(size: float, lot: float) -> float:
    """`size` (signed units) truncated toward zero to whole lots of `lot` units."""
    lots = math.trunc(size / lot + _STEP_TOL * math.copysign(1.0, size))
    return lots * lot


def _rules(symbol: str, value: Any) -> Instrument:
    if isinstance(value, Instrument):
        return value if value.symbol == symbol else value.model_copy(update={"symbol": symbol})
    if not isinstance(value, Mapping):
        raise InstrumentError(f"instruments[{symbol!r}]: give its rules as a dict such as "
                              f"{{'lot_size': 1, 'tick_size': 0.01}}, got {value!r}")
    try:
        return Instrument(**{"symbol": symbol, **value})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "?"
        got = value.get(where, "<missing>") if isinstance(value, Mapping) else value
        known = ", ".join(_RULES)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = f"unknown rule (rules: {known})"
        raise InstrumentError(f"instruments[{symbol!r}]: {where}: {msg} (got {got!r})") from None


def instrument_table(settings: Mapping[str, Any] | None) -> dict[str, Instrument]:
    """Instruments by symbol from `{"GOOG": {"lot_size": 1, "tick_size": 0.01}, ...}` (an
    `Instrument` or a dict of its rules each; the key "*" holds rules for every symbol without
    its own). InstrumentError names a bad symbol, rule or value in one line."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise InstrumentError(f"instruments: give a dict by symbol, got {settings!r}")
    return {str(s): _rules(str(s), v) for s, v in settings.items()}


@functools.lru_cache(maxsize=4096)
def _bare(symbol: str) -> Instrument:
    # Instruments are frozen: the rule-less one of a symbol is built once, not per order.
    return Instrument(symbol=symbol)


@functools.lru_cache(maxsize=4096)
def _renamed(every: Instrument, symbol: str) -> Instrument:
    return every.model_copy(update={"symbol": symbol})


def resolve_instrument(table: Mapping[str, Instrument], symbol: str) -> Instrument:
    """`symbol`'s rules: its own where set, else those of "*", else none."""
    own, every = table.get(symbol), table.get(EVERY)
    if every is None:
        return own or _bare(symbol)
    if own is None:
        return _renamed(every, symbol)
    merged = {r: getattr(own, r) if getattr(own, r) is not None else getattr(every, r)
              for r in _RULES}
    return Instrument(symbol=symbol, **merged)


def parse_instrument_options(**flags: Iterable[str] | None) -> dict[str, dict[str, float]]:
    """Rules from command-line values by rule name (`lot_size=["0.001", "GOOG=1"]`): a bare
    number sets the rule for every symbol, `SYMBOL=NUMBER` for one. ValueError names the flag
    and the text in one line."""
    out: dict[str, dict[str, float]] = {}
    for rule, values in flags.items():
        flag = "--" + {"lot_size": "lot", "tick_size": "tick"}.get(rule, rule.replace("_", "-"))
        for text in values or ():
            symbol, sep, number = str(text).rpartition("=")
            symbol = symbol.strip() if sep else EVERY
            if sep and not symbol:
                raise InstrumentError(f"{flag} {text!r}: expected NUMBER or SYMBOL=NUMBER")
            try:
                value = float(number)
            except ValueError:
                raise InstrumentError(f"{flag} {text!r}: {number.strip()!r} is not a number "
                                      f"(expected NUMBER or SYMBOL=NUMBER)") from None
            positive = value > 0 if rule != "min_notional" else value >= 0
            if not (positive and math.isfinite(value)):
                raise InstrumentError(f"{flag} {text!r}: must be a positive number")
            if rule in out.get(symbol, {}):
                raise InstrumentError(f"{flag} given twice for "
                                      f"{'every symbol' if symbol == EVERY else symbol}")
            out.setdefault(symbol, {})[rule] = value
    return out
