"""Errors the venue providers raise: each message names the venue and says what went wrong.

Nothing here does I/O.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar

from engine.provider import ProviderFailure

__all__ = ["VenueError", "VenueUnreachable", "HttpStatusError", "RateLimited", "UnknownSymbol",
           "MalformedFrame", "UNFORESEEN", "close_matches", "describe", "guard"]

P = ParamSpec("P")
R = TypeVar("R")


class VenueError(ProviderFailure):
    """A venue could not be reached or answered with an error (a ProviderFailure: the engine
    reports it in one line without knowing the venue)."""


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
    """A websocket frame or REST row that does not have the documented shape or values.

    `channel` is the venue's stream it came on, when known ("trade", "bookTicker"); `kind`
    groups frames wrong in the same way for the stream's log (the reason without the
    offending value, unless given).
    """

    def __init__(self, reason: str, symbol: str | None = None, *, channel: str | None = None,
                 kind: str | None = None) -> None:
        self.reason = reason
        self.symbol = symbol
        self.channel = channel
        self.kind = kind or reason.split(": ", 1)[0][:100]
        super().__init__(reason)


# What a parser's own code raises on input it did not foresee: a wrong type, a missing key, an
# integer too large for a float, nesting deeper than the interpreter's stack. Each is one bad
# frame or answer, never a reason to end a stream.
UNFORESEEN = (TypeError, ValueError, LookupError, AttributeError, ArithmeticError,
              RecursionError)


def describe(exc: BaseException, limit: int = 100) -> str:
    """Return `exc` as "Type: message", cut to `limit` characters, whatever its arguments."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a message too deep or odd to print says nothing more
        text = ""
    name = type(exc).__name__
    return f"{name}: {text[:limit]}" if text else name


def guard(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a parser of venue data so that any failure on its input is a MalformedFrame
    ("`what`: unexpected shape (...)"); the parser's own MalformedFrames pass unchanged."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except MalformedFrame:
                raise
            except UNFORESEEN as exc:
                raise MalformedFrame(f"{what}: unexpected shape ({describe(exc)})",
                                     kind=f"{what}: unexpected shape ({type(exc).__name__})"
                                     ) from None
        return guarded

    return wrap


def close_matches(word: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Return up to `n` candidates that look like `word` (difflib ratio >= 0.6), best first."""
    pool = list(candidates)
    found = difflib.get_close_matches(word.lower(), pool, n=n, cutoff=0.6)
    if len(found) < n:
        # A prefix or substring match ("btc" -> "btcusdt") is close too, even when short.
        extra = [c for c in pool if c.startswith(word.lower()) and c not in found]
        found += sorted(extra, key=len)[: n - len(found)]
    return found
