"""The provider spec's surface for a venue adapter: configure, symbol_info, search_symbols,
stream_quotes and backfill_bars, written once for every venue.

A venue provider module builds one `VenueProvider` around its `Venue` class and exposes its
methods as module functions. Exchange info is fetched once per `configure()` and cached; the
sync functions (`symbol_info`, `search_symbols`) fetch it in a private trio run when needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import trio

from engine.dtypes import OHLC_FIELDS

from .errors import VenueError
from .http import HttpClient
from .instruments import InstrumentTable
from .limits import RateLimiter
from .options import StreamSettings, parse_options
from .stream import ResilientStream
from .venue import SymbolState, Venue

if TYPE_CHECKING:
    from engine.shm import ShmArray

__all__ = ["VenueProvider", "run_sync"]

log = logging.getLogger("providers.net")
T = TypeVar("T")


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Run async `fn` to completion from sync code and return its result.

    Outside trio it gets its own trio run. Inside a trio run (a sync spec function called from
    async code, as `engine check-provider` does with `search_symbols`) it runs in a worker
    thread with its own trio run, and this thread blocks until it is done: acceptable for a
    one-off, cached exchange-info fetch, never used on the streaming path.
    """
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return trio.run(fn)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = trio.run(fn)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="venue-exchange-info", daemon=True)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class VenueProvider:
    """One venue's provider state: options, rate limiter and cached instruments."""

    def __init__(self, venue_cls: type[Venue]) -> None:
        self.venue_cls = venue_cls
        self.name = venue_cls.name
        self.log = logging.getLogger(f"providers.{self.name}")
        self._options: dict[str, Any] | None = None
        self._venue: Venue | None = None
        self._limiter: RateLimiter | None = None
        self._table: InstrumentTable | None = None

    # -- configuration -----------------------------------------------------------------------

    def configure(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validate `options`, forget cached exchange info, return the options in effect."""
        values = parse_options(self.name, self.venue_cls.OPTIONS, options)
        self._options = values
        self._venue = self.venue_cls(values)
        self._limiter = self._venue.make_limiter()
        self._table = None
        return dict(values)

    def reset(self) -> None:
        """Forget options and caches; the next use configures from the environment."""
        self._options = self._venue = self._limiter = self._table = None

    @property
    def venue(self) -> Venue:
        if self._venue is None:
            self.configure({})
        assert self._venue is not None
        return self._venue

    def http(self) -> HttpClient:
        """Return a REST client for the configured venue (an async context manager)."""
        venue = self.venue
        assert self._limiter is not None
        return HttpClient(venue.options["rest_url"], venue=self.name, limiter=self._limiter,
                          timeout=venue.options["request_timeout"])

    # -- instruments -------------------------------------------------------------------------

    async def instruments(self, http: HttpClient | None = None) -> InstrumentTable:
        """Return the venue's instruments, fetching exchange info once per configuration."""
        venue = self.venue
        if self._table is None:
            if http is None:
                async with self.http() as own:
                    table = await venue.load_instruments(own)
            else:
                table = await venue.load_instruments(http)
            if self._venue is venue:  # not reconfigured meanwhile
                self._table = table
            return table
        return self._table

    def _table_sync(self) -> InstrumentTable:
        if self._table is not None:
            return self._table
        return run_sync(self.instruments)

    def symbol_info(self, symbol: str) -> dict[str, Any]:
        """Return `symbol`'s tick size, lot size, minimum size and notional, base and quote."""
        return self._table_sync().resolve(symbol).info(symbol, self.name)

    def search_symbols(self, pattern: str = "") -> list[str]:
        """Return the venue's trading instruments matching `pattern`, best matches first."""
        return self._table_sync().search(pattern)

    # -- streaming ---------------------------------------------------------------------------

    async def stream_quotes(self, send_chan: trio.abc.SendChannel, symbols: list[str],
                            feed_is_live: trio.Event, loglevel: str | None,
                            task_status: trio.TaskStatus) -> None:
        level = logging.getLevelName(loglevel.upper()) if loglevel else None
        if isinstance(level, int):
            self.log.setLevel(level)
        symbols = list(dict.fromkeys([symbols] if isinstance(symbols, str) else symbols))
        if not symbols:
            raise ValueError(f"{self.name} stream_quotes needs at least one symbol")
        venue = self.venue
        async with self.http() as http:
            table = await self.instruments(http)
            states: dict[str, SymbolState] = {}
            infos: dict[str, dict[str, Any]] = {}
            for sym in symbols:
                inst = table.resolve(sym)  # unknown symbols fail here, before started
                # The feed closes bars this long after their end: venue trades arrive late.
                infos[sym] = dict(inst.info(sym, self.name),
                                  close_delay=venue.options["close_delay"])
                st = states.setdefault(inst.venue_symbol, SymbolState(
                    inst.venue_symbol, inst.rest_symbol, [], inst))
                st.names.append(sym)
            order = list(states.values())
            await venue.first_quotes(http, order)
            first = {}
            for st in order:
                for name in st.names:
                    first[name] = _first_quote(self.name, name, st)
            settings = StreamSettings.from_options(venue.options, venue.ws_endpoint(order))
            stream = ResilientStream(venue, http, order, send_chan, feed_is_live, settings)
            task_status.started((infos, first))
            self.log.info("%s: streaming %s from %s", self.name, ", ".join(symbols),
                          settings.ws_url)
            await stream.run()

    # -- history -----------------------------------------------------------------------------

    async def backfill_bars(self, sym: str, shm: ShmArray, count: int,
                            task_status: trio.TaskStatus) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            if shm.dtype.names is None or not set(OHLC_FIELDS) <= set(shm.dtype.names):
                raise ValueError(f"{self.name} backfill_bars needs an ohlc_dtype buffer, "
                                 f"got {shm.dtype}")
            if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
                raise ValueError(f"{self.name} backfill_bars: count must be an int >= 0, "
                                 f"got {count!r}")
            if count == 0:
                return
            async with self.http() as http:
                inst = (await self.instruments(http)).resolve(sym)
                async with aclosing(self.venue.history(http, inst, int(count))) as frames:
                    await self._fill(shm, frames)
            self.log.debug("%s: backfilled %s with %d bars", self.name, sym, len(shm))

    @staticmethod
    async def _fill(shm: ShmArray, frames: AsyncIterator[np.ndarray]) -> None:
        # Newest frame pushed, older ones prepended: rows stay in time order, within bounds.
        held = shm.array
        before = int(held["time"][0]) if len(held) else None
        pushed = before is not None
        async for rows in frames:
            if before is not None:
                rows = rows[rows["time"] < before]
            if not pushed and len(rows):
                fit = rows[len(rows) - min(shm.room_after, len(rows)):]
                if len(fit):
                    shm.push(fit)
                rows = rows[: len(rows) - len(fit)]
                pushed = True
            room = shm.room_before
            if len(rows) and room:
                shm.prepend(rows[max(0, len(rows) - room):])
            if len(shm):
                before = int(shm.array["time"][0])
            if pushed and shm.room_before == 0:
                return


def _first_quote(venue: str, name: str, st: SymbolState) -> dict[str, Any]:
    book = st.book
    last = st.last_price
    if last is None and book is not None:
        if book.last is not None:
            last = book.last
        elif book.bid is not None and book.ask is not None:
            last = (book.bid + book.ask) / 2  # a pair with no trade yet: the mid
    if last is None:
        raise VenueError(f"{venue}: no price for {name!r} (no trade and no book)")
    quote: dict[str, Any] = {"symbol": name, "last": last, "ticks": []}
    t = st.last_time if st.last_time is not None else (book.time if book else None)
    if t is not None:
        quote["time"] = t
    if book is not None:
        for key, value in (("bid", book.bid), ("bsize", book.bid_size), ("ask", book.ask),
                           ("asize", book.ask_size)):
            if value is not None:
                quote[key] = value
    return quote
