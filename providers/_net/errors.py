"""Errors the venue providers raise: each message names the venue and says what went wrong.

Nothing here does I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["VenueError", "VenueUnreachable", "HttpStatusError", "RateLimited", "UnknownSymbol",
           "MalformedFrame", "close_matches"]


class VenueError(RuntimeError):
    """A venue could not be reached or answered with an error."""


class VenueUnreachable(VenueError):
    """The venue did not answer: DNS, TCP, TLS or a timeout."""


class HttpStatusError(VenueError):
    """The venue answered a REST request with an error status (and its own code and message)."""

    def __init__(self, venue: str, url: str, status: int, message: str) -> None:
        self.status = status
        self.url = url
        super().__init__(f"{venue}: GET {url} failed with HTTP {status}: {message}")


class RateLimited(VenueError):
    """The venue asked us to wait longer than the configured maximum (429/418, ban)."""


class UnknownSymbol(VenueError, KeyError, ValueError):
    """The venue lists no such instrument (a KeyError and a ValueError too, like sim's)."""

    def __init__(self, venue: str, symbol: str, matches: list[str]) -> None:
        self.symbol = symbol
        self.matches = matches
        hint = f"; close matches: {', '.join(matches)}" if matches else ""
        super().__init__(f"{venue} has no symbol {symbol!r}{hint}")

    def __str__(self) -> str:
        # KeyError would quote the message.
        return str(self.args[0])


class MalformedFrame(ValueError):
    """A websocket frame or REST row that does not have the documented shape."""

    def __init__(self, reason: str, symbol: str | None = None) -> None:
        self.reason = reason
        self.symbol = symbol
        super().__init__(reason)


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to `n` candidates that look like `word` (difflib ratio >= 0.6), best first."""
    pool = list(candidates)
    found = difflib.get_close_matches(word.lower(), pool, n=n, cutoff=0.6)
    if len(found) < n:
        # A prefix or substring match ("btc" -> "btcusdt") is close too, even when short.
        extra = [c for c in pool if c.startswith(word.lower()) and c not in found]
        found += sorted(extra, key=len)[: n - len(found)]
    return found
