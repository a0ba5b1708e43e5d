"""Shared network code of the venue providers (Binance, Kraken): a trio-native REST client with
rate limiting, and a resilient websocket stream with reconnects, stale detection and gap replay.

Nothing in here knows a particular venue; each venue is an adapter (`Venue`) in its own provider
package. This package never writes shared memory and never reads the wall clock: every timeout,
backoff and rate-limit wait runs on trio's clock.
"""

from .backoff import Backoff
from .errors import (
    HttpStatusError,
    MalformedFrame,
    RateLimited,
    UnknownSymbol,
    VenueError,
    VenueUnreachable,
)
from .events import Book, Control, Trade
from .http import HttpClient
from .instruments import Instrument, InstrumentTable, symbol_key
from .limits import RateLimiter, RetryAfter
from .options import Option, common_options
from .provider import VenueProvider, run_sync
from .stream import ResilientStream, StreamStats
from .venue import SymbolState, Venue

__all__ = [
    "Backoff", "Book", "Control", "HttpClient", "HttpStatusError", "Instrument",
    "InstrumentTable", "MalformedFrame", "Option", "RateLimited", "RateLimiter",
    "ResilientStream", "RetryAfter", "StreamStats", "SymbolState", "Trade", "UnknownSymbol",
    "Venue", "VenueError", "VenueProvider", "VenueUnreachable", "common_options", "run_sync",
    "symbol_key",
]
