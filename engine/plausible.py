"""What market data every provider reads must look like to be believed: prices finite, positive
and below `MAX_PRICE`; sizes and volumes finite and in 0..`MAX_SIZE`; times from 1970 to the end
of next year; bars whose high and low bound their open and close.

Used by the CSV reader and by the venue parsers (REST history, trades, books and websocket
frames). Checks return what is wrong as a short phrase, or None; each caller raises its own error
(MalformedFileError naming file, line and column; MalformedFrame naming venue and field). Nothing
here does I/O; the calendar year behind the time ceiling is the one wall-clock read.

The bar check is exact (no tolerance): parsing decimal text to floats is monotonic, so a file or
answer whose own digits have high >= close keeps it as floats; a row that breaks it is wrong in
its source. Every file of the shared real data and the shipped samples passes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

__all__ = ["MAX_PRICE", "MAX_SIZE", "MAX_ID", "price_problem", "size_problem", "time_problem",
           "time_ceiling", "first_bad_bar"]

# Above any price a real instrument trades at in any currency (bitcoin in Vietnamese dong is
# about 2.5e9); 1e308 or a mistyped exponent is not a price.
MAX_PRICE = 1e12
# Above any traded size or daily volume (a meme token's daily volume is ~1e14 units); keeps a
# notional (price * size) finite.
MAX_SIZE = 1e18
# Trade and update ids are stored as int64.
MAX_ID = 2**63 - 1

_ceiling: tuple[float, float] = (-math.inf, 0.0)  # (start of next year, ceiling), cached


def time_ceiling(now: float | None = None) -> float:
    """Return the latest plausible data time (epoch seconds): 1 January of the year after next,
    UTC, for `now` (epoch seconds; the wall clock when None)."""
    global _ceiling
    if now is None:
        # A calendar bound, not a timing: a year of slack makes clock skew irrelevant.
        now = time.time()
        if now < _ceiling[0]:
            return _ceiling[1]
    year = datetime.fromtimestamp(now, UTC).year
    next_year = datetime(year + 1, 1, 1, tzinfo=UTC).timestamp()
    ceiling = datetime(year + 2, 1, 1, tzinfo=UTC).timestamp()
    _ceiling = (next_year, ceiling)
    return ceiling


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{t:.6g} s after 1970"


def price_problem(x: float) -> str | None:
    """What is wrong with `x` as a price, or None."""
    if not math.isfinite(x):
        return "is not a finite number"
    if x <= 0:
        return "is not a positive price"
    if x >= MAX_PRICE:
        return f"is not a plausible price (at or above {MAX_PRICE:.0e})"
    return None


def size_problem(x: float) -> str | None:
    """What is wrong with `x` as a size or volume, or None."""
    if not math.isfinite(x):
        return "is not a finite number"
    if x < 0:
        return "is negative"
    if x >= MAX_SIZE:
        return f"is not a plausible size (at or above {MAX_SIZE:.0e})"
    return None


def time_problem(t: float, now: float | None = None) -> str | None:
    """What is wrong with `t` (epoch seconds) as a data time, or None."""
    if not math.isfinite(t):
        return "is not a finite time"
    ceiling = time_ceiling(now)
    if not 0 <= t < ceiling:
        last = datetime.fromtimestamp(ceiling, UTC).year - 1
        return f"is {_iso(t)}, not between 1970 and the end of {last}"
    return None


def first_bad_bar(bars: np.ndarray, now: float | None = None) -> tuple[int, str, str] | None:
    """Return (index, field, what is wrong) of the first of `bars` (ohlc_dtype rows, in the
    caller's order) that fails a check, or None when all pass.

    The phrase is to follow the field's value: `high` 11 `"is below low 12"`.
    """
    t = bars["time"].astype(np.float64)
    o, h, low, c, v = (bars[f].astype(np.float64)
                       for f in ("open", "high", "low", "close", "volume"))
    ceiling = time_ceiling(now)

    def outside(b: np.void) -> str:
        return f"is outside low..high {float(b['low']):.12g}..{float(b['high']):.12g}"

    # (field, failing rows, what is wrong with a failing row), in the order a message names them.
    with np.errstate(invalid="ignore"):
        checks: list[tuple[str, np.ndarray, Callable[[np.void], str]]] = [
            ("time", ~((t >= 0) & (t < ceiling)),
             lambda b: time_problem(float(b["time"]), now) or "is not a plausible time")]
        checks += [(name, ~(np.isfinite(x) & (x > 0) & (x < MAX_PRICE)),
                    lambda b, name=name: price_problem(float(b[name])) or "is not a price")
                   for name, x in (("open", o), ("high", h), ("low", low), ("close", c))]
        checks += [
            ("volume", ~(np.isfinite(v) & (v >= 0) & (v < MAX_SIZE)),
             lambda b: size_problem(float(b["volume"])) or "is not a volume"),
            ("high", h < low, lambda b: f"is below low {float(b['low']):.12g}"),
            ("open", (o > h) | (o < low), outside),
            ("close", (c > h) | (c < low), outside),
        ]
    bad = np.logical_or.reduce([mask for _, mask, _ in checks])
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    name, _, describe = next(check for check in checks if check[1][i])
    return i, name, describe(bars[i])
