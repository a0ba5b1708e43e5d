"""A venue's instrument list, as read from its exchange-info endpoint: lookup by any spelling a
user types, search, and the symbol info the spec's `symbol_info` returns.

Data and lookup only: the venue modules fetch and parse exchange info; nothing here does I/O.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import UnknownSymbol, close_matches

__all__ = ["Instrument", "InstrumentTable", "symbol_key"]


def symbol_key(text: str) -> str:
    """Return the engine-style spelling of a symbol: lower case, no separators ("btcusdt")."""
    return "".join(ch for ch in str(text).lower() if ch not in "/-_: .")


@dataclass(frozen=True)
class Instrument:
    """One tradable pair. Prices in quote currency, sizes in base currency units."""

    key: str  # engine-style name: "btcusdt", "btcusd"
    venue_symbol: str  # what the venue's websocket calls it: "BTCUSDT", "BTC/USD"
    rest_symbol: str  # what its REST endpoints take: "BTCUSDT", "XBTUSD"
    base: str
    quote: str
    tick_size: float  # smallest price increment
    lot_size: float  # smallest size increment
    min_size: float  # smallest order size
    min_notional: float | None  # smallest order value (quote currency), if the venue has one
    status: str
    trading: bool
    aliases: tuple[str, ...] = ()  # other spellings (symbol_key form) that name it
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def info(self, requested: str, provider: str) -> dict[str, Any]:
        """Return the spec's symbol info for this instrument, as `requested`."""
        return {
            "symbol": requested,
            "venue_symbol": self.venue_symbol,
            "rest_symbol": self.rest_symbol,
            "description": f"{self.base}/{self.quote} spot on {provider}",
            "asset_class": "crypto",
            "base": self.base,
            "quote": self.quote,
            "currency": self.quote,
            "tick_size": self.tick_size,
            "lot_size": self.lot_size,
            "min_size": self.min_size,
            "min_notional": self.min_notional,
            "status": self.status,
            "provider": provider,
            "has_trades": True,
            "writes_shm": False,  # ticks come as messages; the engine writes the tick buffer
            **self.extra,
        }


class InstrumentTable:
    """The instruments of one venue, findable by key, venue symbol, REST symbol or alias."""

    def __init__(self, venue: str, instruments: Iterable[Instrument]) -> None:
        self.venue = venue
        self.instruments = list(instruments)
        self._by: dict[str, Instrument] = {}
        for inst in self.instruments:
            names = (inst.key, symbol_key(inst.venue_symbol), symbol_key(inst.rest_symbol),
                     *inst.aliases)
            for name in names:
                # The first instrument claiming a spelling keeps it (the primary listing).
                self._by.setdefault(name, inst)

    def __len__(self) -> int:
        return len(self.instruments)

    def get(self, symbol: str) -> Instrument | None:
        return self._by.get(symbol_key(symbol))

    def resolve(self, symbol: str) -> Instrument:
        """Return the instrument `symbol` names (any case, with or without separators).

        Raise UnknownSymbol naming it, with close matches, when the venue has no such pair or
        no longer trades it.
        """
        inst = self.get(symbol) if isinstance(symbol, str) and symbol.strip() else None
        if inst is None:
            matches = close_matches(symbol_key(str(symbol)), [i.key for i in self.instruments
                                                              if i.trading])
            raise UnknownSymbol(self.venue, str(symbol), matches)
        if not inst.trading:
            raise UnknownSymbol(self.venue, f"{symbol} (listed but not trading: status "
                                f"{inst.status})", [])
        return inst

    def search(self, pattern: str = "", *, include_halted: bool = False) -> list[str]:
        """Return the keys of the instruments matching `pattern`, best matches first.

        An empty pattern lists every trading instrument in the venue's order; a pattern with
        `*` or `?` is a glob over the names; anything else matches as a substring of a name,
        the base or the quote asset (any case; separators ignored).
        """
        pool = [i for i in self.instruments if include_halted or i.trading]
        text = pattern.strip()
        if not text:
            return [i.key for i in pool]
        if any(ch in text for ch in "*?["):
            glob = symbol_key(text)
            return [i.key for i in pool if any(fnmatch.fnmatchcase(n, glob)
                                              for n in self._names(i))]
        key = symbol_key(text)
        ranked: list[tuple[int, int, str]] = []
        for pos, inst in enumerate(pool):
            names = self._names(inst)
            if key in names:
                rank = 0
            elif any(n.startswith(key) for n in names):
                rank = 1
            elif any(key in n for n in names) or key in (symbol_key(inst.base),
                                                        symbol_key(inst.quote)):
                rank = 2
            else:
                continue
            ranked.append((rank, pos, inst.key))
        return [k for _, _, k in sorted(ranked)]

    @staticmethod
    def _names(inst: Instrument) -> tuple[str, ...]:
        return (inst.key, symbol_key(inst.venue_symbol), symbol_key(inst.rest_symbol),
                *inst.aliases)
