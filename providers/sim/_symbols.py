"""The simulated market's fixed universe: base price, tick and lot size, spread and vol per symbol.

Data and lookup only: nothing here draws a random number or reads a clock.
"""

from __future__ import annotations

import difflib
import math
import zlib
from dataclasses import dataclass
from decimal import Decimal

# Seconds of trading in a year, so an annualized vol becomes a per-second one: crypto trades all
# year round, spot FX 24 h on ~260 weekdays, US equities 6.5 h on 252 sessions.
SECONDS_PER_YEAR = {
    "crypto": 365 * 86400,
    "fx": 260 * 86400,
    "equity": 252 * 6.5 * 3600,
    "etf": 252 * 6.5 * 3600,
}


class SymbolNotFound(KeyError, ValueError):
    """The simulated market has no such symbol (both a KeyError and a ValueError)."""

    def __init__(self, symbol: object) -> None:
        close = difflib.get_close_matches(str(symbol).lower(), list(UNIVERSE), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        super().__init__(f"sim has no symbol {symbol!r}{hint} (known: {', '.join(UNIVERSE)})")
        self.symbol = symbol

    def __str__(self) -> str:
        # KeyError would quote the message.
        return str(self.args[0])


@dataclass(frozen=True)
class SymbolSpec:
    name: str
    description: str
    asset_class: str
    currency: str
    price: float  # typical price, in `currency`
    tick: float  # price increment
    lot: float  # size increment, in units of the asset
    spread_ticks: int  # usual bid/ask spread, in ticks
    volatility: float  # annualized log vol, fraction
    trade_size: float  # mean trade size, in units
    book_size: float  # mean top-of-book size, in units

    @property
    def key(self) -> int:
        """A stable 32-bit number for seeding: the same in every process and Python version."""
        return zlib.crc32(self.name.encode())

    @property
    def price_decimals(self) -> int:
        return _decimals(self.tick)

    @property
    def size_decimals(self) -> int:
        return _decimals(self.lot)

    @property
    def sigma(self) -> float:
        """The default per-second log vol."""
        return self.volatility / math.sqrt(SECONDS_PER_YEAR[self.asset_class])


def _decimals(step: float) -> int:
    return max(0, -int(Decimal(repr(step)).normalize().as_tuple().exponent))


# Prices are late-2024 levels; spreads and sizes are those of a liquid venue, rounded.
UNIVERSE: dict[str, SymbolSpec] = {
    s.name: s
    for s in [
        SymbolSpec("btcusd", "Bitcoin / US dollar", "crypto", "USD",
                   64000.0, 0.1, 0.0001, 5, 0.60, 0.05, 1.5),
        SymbolSpec("ethusd", "Ether / US dollar", "crypto", "USD",
                   3200.0, 0.01, 0.001, 10, 0.75, 0.5, 20.0),
        SymbolSpec("solusd", "Solana / US dollar", "crypto", "USD",
                   150.0, 0.01, 0.01, 2, 0.95, 5.0, 200.0),
        SymbolSpec("eurusd", "Euro / US dollar", "fx", "USD",
                   1.08, 0.00001, 1000.0, 2, 0.07, 100_000.0, 1_000_000.0),
        SymbolSpec("gbpusd", "Pound sterling / US dollar", "fx", "USD",
                   1.27, 0.00001, 1000.0, 3, 0.08, 100_000.0, 1_000_000.0),
        SymbolSpec("usdjpy", "US dollar / Japanese yen", "fx", "JPY",
                   151.5, 0.001, 1000.0, 3, 0.10, 100_000.0, 1_000_000.0),
        SymbolSpec("aapl", "Apple Inc.", "equity", "USD",
                   190.0, 0.01, 1.0, 1, 0.25, 100.0, 500.0),
        SymbolSpec("msft", "Microsoft Corp.", "equity", "USD",
                   420.0, 0.01, 1.0, 2, 0.22, 100.0, 300.0),
        SymbolSpec("nvda", "NVIDIA Corp.", "equity", "USD",
                   120.0, 0.01, 1.0, 1, 0.50, 200.0, 1000.0),
        SymbolSpec("spy", "SPDR S&P 500 ETF", "etf", "USD",
                   560.0, 0.01, 1.0, 1, 0.15, 200.0, 2000.0),
    ]
}  # fmt: skip


def lookup(symbol: str) -> SymbolSpec:
    """Return the spec of `symbol` (any case); raise SymbolNotFound naming it otherwise."""
    spec = UNIVERSE.get(symbol.lower()) if isinstance(symbol, str) else None
    if spec is None:
        raise SymbolNotFound(symbol)
    return spec


def search(pattern: str) -> list[str]:
    """Return the symbols whose name or description contains `pattern`, then close spellings."""
    pat = pattern.strip().lower()
    hits = [n for n, s in UNIVERSE.items() if pat in n or pat in s.description.lower()]
    fuzzy = difflib.get_close_matches(pat, list(UNIVERSE), n=5, cutoff=0.6) if pat else []
    return hits + [n for n in fuzzy if n not in hits]
