"""The resilient websocket stream every venue provider runs: connect, subscribe, detect a dead or
stale stream, reconnect with jittered exponential backoff, and replay the trades missed in the
gap so the engine's bars have no holes.

The gap protocol (engine/quotes.py FEED_STATUSES). When the connection drops, or no message
arrives within `stale_after` seconds, the stream sends
`{"feed_status": "disconnected" | "stale", "symbols": [...], "reason": ...}`; the feed then holds
those symbols' bars instead of closing them flat by the clock. After reconnecting and
resubscribing it fetches the trades it missed over REST (from the last trade it delivered, by
trade id), while live messages keep arriving into a buffer. It sends the missed trades as
ordinary quotes marked `"replayed": True`, in time order, then `"reconnected"` and `"gap_filled"`,
then the buffered live messages, dropping every trade at or before the last one delivered: no
tick reaches the feed twice or out of order.

Why "reconnected" comes after the replay and not at the moment of reconnecting: engine/feed.py
releases a symbol's hold on "reconnected" as well as on "gap_filled", and a released symbol's
bars are closed flat by the clock at once, so replayed trades arriving after it would be late and
leave holes. Sent after the replay, it still tells strategies the connection is back.

Timing is trio's clock throughout (stale timeouts, backoff sleeps), so tests run on a MockClock.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
)

from .backoff import Backoff
from .errors import UNFORESEEN, MalformedFrame, VenueError, describe
from .events import Book, Control, Trade, book_msg, trade_msg
from .http import HttpClient
from .malformed import MalformedLog
from .options import StreamSettings
from .venue import SymbolState, Venue
from .ws import open_ws

__all__ = ["ResilientStream", "StreamStats"]

log = logging.getLogger("providers.net")

# A connection that delivered data this long (seconds) was healthy: the next drop starts the
# backoff again from its minimum instead of continuing to double.
HEALTHY_AFTER = 10.0
# When REST has not yet caught up with the first live trade (Binance serves aggTrades from a
# database that may lag the stream), ask again this many times, this long apart (seconds).
LAG_RETRIES = 4
LAG_WAIT = 0.5
# The most missed trades one symbol replays (memory bound: ~100 bytes each).
MAX_REPLAY = 2_000_000
# The largest websocket message accepted (bytes); venue frames here are well under 64 KiB.
MAX_FRAME = 1 << 22


@dataclass
class StreamStats:
    """Counters of one stream, for logs and tests."""

    connections: int = 0
    live_trades: int = 0
    replayed: int = 0
    duplicates: int = 0
    malformed: int = 0
    gaps: int = 0
    unfilled: list[str] = field(default_factory=list)


class ResilientStream:
    """Run one venue's websocket for `states` until cancelled, sending quote messages."""

    def __init__(self, venue: Venue, http: HttpClient, states: list[SymbolState],
                 send_chan: trio.abc.SendChannel, feed_is_live: trio.Event,
                 settings: StreamSettings) -> None:
        self.venue = venue
        self.http = http
        self.states = states
        self.by_venue = {st.venue_symbol: st for st in states}
        self.names = [name for st in states for name in st.names]
        self.send_chan = send_chan
        self.feed_is_live = feed_is_live
        self.settings = settings
        seed = settings.jitter_seed
        self.backoff = Backoff(settings.reconnect_min, settings.reconnect_max,
                               rng=random.Random(seed) if seed is not None else None)
        self.stats = StreamStats()
        self.malformed_log = MalformedLog(venue.name)
        # (status, reason, trio time) while the feed has been told the stream is down.
        self._down: tuple[str, str, float] | None = None

    # -- the reconnect loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Stream until cancelled; never returns."""
        while True:
            self._outcome: tuple[str, str] | None = None
            self._live_since: float | None = None
            await self._session()
            self.malformed_log.flush()
            status, reason = self._outcome or ("disconnected", "connection ended")
            await self._report_down()
            now = trio.current_time()
            if self._live_since is not None and now - self._live_since >= HEALTHY_AFTER:
                self.backoff.reset()
            delay = self.backoff.next()
            log.warning("%s: stream %s (%s); reconnecting in %.1f s", self.venue.name, status,
                        reason, delay)
            await trio.sleep(delay)

    def _end(self, status: str, reason: str) -> None:
        if self._outcome is None:
            self._outcome = (status, reason)

    async def _report_down(self) -> None:
        """Tell the feed the stream is down, once per outage, as soon as it is known."""
        if self._down is None:
            status, reason = self._outcome or ("disconnected", "connection ended")
            self._down = (status, reason, trio.current_time())
            await self._send_status(status, reason)

    async def _session(self) -> None:
        url = self.settings.ws_url
        try:
            await self._connect_and_serve(url)
        except* ConnectionClosed as group:
            self._end("disconnected", _closed(group.exceptions[0]))
        except* (HandshakeError, trio.TooSlowError) as group:
            self._end("disconnected", f"cannot connect to {url}: "
                                      f"{_describe(group.exceptions[0])}")
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as group:
            self._end("disconnected", f"connection to {url} failed: "
                                      f"{_describe(group.exceptions[0])}")

    async def _connect_and_serve(self, url: str) -> None:
        async with open_ws(url, self.settings.connect_timeout, MAX_FRAME) as ws:
            self.stats.connections += 1
            await self._serve(ws)
            # A normal end (stale, rejected): say goodbye, briefly.
            with trio.move_on_after(self.settings.close_timeout):
                await ws.aclose()

    async def _serve(self, ws) -> None:
        for frame in self.venue.subscribe_frames(self.states):
            await ws.send_message(frame)
        inbox_send, inbox_recv = trio.open_memory_channel(math.inf)
        self._subscribed = trio.Event()
        self._draining = False
        self._acks = 0
        self._first_live: dict[str, Trade] = {}
        self._horizon: float | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, ws, inbox_send, nursery.cancel_scope)
            await self._consume(inbox_recv)

    # -- reading -------------------------------------------------------------------------------

    async def _read(self, ws, inbox: trio.MemorySendChannel, scope: trio.CancelScope) -> None:
        try:
            await self._read_frames(ws, inbox)
        finally:
            # Ending closes the inbox: a consumer delivering live data drains what was received
            # and then reports the outage, in order. One still subscribing or replaying a gap
            # is stopped; what it had not delivered is replayed after the next connection.
            if not self._draining:
                scope.cancel()

    async def _read_frames(self, ws, inbox: trio.MemorySendChannel) -> None:
        expected = self.venue.acks_expected(self.states)
        async with inbox:
            while True:
                try:
                    with trio.move_on_after(self.settings.stale_after) as wait:
                        frame = await ws.get_message()
                except ConnectionClosed as exc:
                    self._end("disconnected", _closed(exc))
                    break
                if wait.cancelled_caught:
                    self._end("stale", f"no message for {self.settings.stale_after:g} s")
                    break
                try:
                    events = self.venue.parse(frame)
                except MalformedFrame as exc:
                    self._malformed(exc, frame)
                    continue
                except UNFORESEEN as exc:
                    # An adapter whose parser let its own error out: still one bad frame, not
                    # a reason to stop the stream.
                    self._malformed(MalformedFrame(describe(exc),
                                                   kind=f"parser error {type(exc).__name__}"),
                                    frame)
                    continue
                for event in events:
                    if isinstance(event, Control):
                        if not self._control(event, expected):
                            return
                        continue
                    vsym, item = event
                    if vsym not in self.by_venue:
                        self._malformed(MalformedFrame(f"data for {vsym!r}, which is not "
                                                       "subscribed",
                                                       kind="data for a symbol not subscribed"),
                                        frame)
                        continue
                    if isinstance(item, Trade):
                        last = self.by_venue[vsym].last_id
                        # The first live print not yet delivered bounds the gap (a venue may
                        # resend older ones first on a new connection).
                        if last is None or item.last_id > last:
                            self._first_live.setdefault(vsym, item)
                        self._horizon = max(self._horizon or item.time, item.time)
                    inbox.send_nowait(event)

    def _control(self, event: Control, expected: int) -> bool:
        if event.kind == "ack":
            self._acks += 1
            if self._acks >= expected:
                self._subscribed.set()
        elif event.kind == "nack":
            self._end("disconnected", f"subscription rejected: {event.detail}")
            log.error("%s: subscription rejected%s: %s", self.venue.name,
                      f" for {event.symbol}" if event.symbol else "", event.detail)
            return False
        elif event.kind == "status" and event.detail:
            log.warning("%s: venue status: %s", self.venue.name, event.detail)
        return True

    def _malformed(self, exc: MalformedFrame, frame: str | bytes) -> None:
        self.stats.malformed += 1
        names = self.by_venue[exc.symbol].names if exc.symbol in self.by_venue else None
        self.malformed_log.record(exc, frame, names)

    # -- delivering ----------------------------------------------------------------------------

    async def _consume(self, inbox: trio.MemoryReceiveChannel) -> None:
        await self._subscribed.wait()
        if self._down is not None:
            await self._fill_gap()
        self._draining = True
        async for vsym, item in inbox:
            st = self.by_venue[vsym]
            if isinstance(item, Trade):
                await self._deliver_trade(st, item)
            else:
                await self._deliver_book(st, item)
        # The reader ended and everything it received is out: report now, before the close
        # handshake (which a stalled venue may never answer).
        await self._report_down()

    async def _deliver_trade(self, st: SymbolState, trade: Trade, replayed: bool = False) -> None:
        fresh = st.admit(trade)
        if fresh is None:
            self.stats.duplicates += 1
            return
        for name in st.names:
            await self.send_chan.send(trade_msg(name, fresh, replayed=replayed))
        st.commit(fresh)
        if replayed:
            self.stats.replayed += 1
        else:
            self.stats.live_trades += 1
            self._now_live()

    async def _deliver_book(self, st: SymbolState, book: Book) -> None:
        prev = st.book
        if book.seq is not None and prev is not None and prev.seq is not None \
                and book.seq <= prev.seq:
            self.stats.duplicates += 1
            return
        if prev is not None:
            # A venue may send one side only: the other keeps its last known level.
            merged = Book(bid=_first(book.bid, prev.bid), bid_size=_first(book.bid_size,
                                                                          prev.bid_size),
                          ask=_first(book.ask, prev.ask), ask_size=_first(book.ask_size,
                                                                          prev.ask_size),
                          time=book.time, seq=book.seq, last=book.last, extra=book.extra)
            if merged.bid is not None and merged.ask is not None and merged.bid >= merged.ask:
                # The side kept from an earlier update is out of date (a parser refuses a
                # frame crossed in itself). Refuse the update and start the book afresh: the
                # venue's next top-of-book update rebuilds it whole, as a snapshot would.
                kept = "bid" if book.bid is None else "ask"
                self._malformed(MalformedFrame(
                    f"update crosses the book: bid {merged.bid!r} is not below ask "
                    f"{merged.ask!r} (the {kept} kept from an earlier update); refused, the "
                    "book restarts from the next update", st.venue_symbol,
                    kind="update crosses the book"),
                    f"update: bid {book.bid} x {book.bid_size}, ask {book.ask} x "
                    f"{book.ask_size}")
                st.book = Book(seq=book.seq)
                return
            book = merged
        msgs = [book_msg(name, book, prev, st.last_price) for name in st.names]
        for msg in msgs:
            if msg is not None:
                await self.send_chan.send(msg)
        st.book = book
        if book.last is not None and st.last_price is None:
            st.last_price = book.last
        self._now_live()

    def _now_live(self) -> None:
        if self._live_since is None:
            self._live_since = trio.current_time()
        if not self.feed_is_live.is_set():
            self.feed_is_live.set()

    async def _send_status(self, status: str, reason: str, names: list[str] | None = None
                           ) -> None:
        await self.send_chan.send({"feed_status": status, "symbols": names or self.names,
                                   "reason": reason})

    # -- the gap -------------------------------------------------------------------------------

    async def _fill_gap(self) -> None:
        assert self._down is not None
        status, why, since = self._down
        self.stats.gaps += 1
        replay: list[tuple[float, int, SymbolState, Trade]] = []
        filled: list[SymbolState] = []
        problems: list[str] = []
        for k, st in enumerate(self.states):
            try:
                trades = await self._missed(st)
            except VenueError as exc:
                problems.append(f"{st.venue_symbol}: {exc}")
                self.stats.unfilled.extend(st.names)
                log.error("%s: could not replay the trades %s missed: %s", self.venue.name,
                          "/".join(st.names), exc)
                continue
            if trades is None:
                problems.append(f"{st.venue_symbol}: gap longer than max_gap="
                                f"{self.settings.max_gap:g} s, not replayed")
                self.stats.unfilled.extend(st.names)
                continue
            replay.extend((t.time, k, st, t) for t in trades)
            filled.append(st)
        # In time order across symbols; a symbol's own trades keep their id order.
        replay.sort(key=lambda r: (r[0], r[1]))
        before = self.stats.replayed
        for _, _, st, trade in replay:
            await self._deliver_trade(st, trade, replayed=True)
        count = self.stats.replayed - before
        down_for = trio.current_time() - since
        reason = f"back after {down_for:.1f} s ({status}: {why}); {count} missed trades replayed"
        if problems:
            reason += "; not replayed: " + "; ".join(problems)
        await self._send_status("reconnected", reason)
        if filled:
            await self._send_status("gap_filled", f"{count} missed trades replayed",
                                    [n for st in filled for n in st.names])
        log.info("%s: %s", self.venue.name, reason)
        self._down = None

    async def _missed(self, st: SymbolState) -> list[Trade] | None:
        """The trades after `st`'s last delivered one, up to the first live trade."""
        if st.last_id is None:
            return []
        cursor = self.venue.gap_cursor(st)
        out: list[Trade] = []
        newest = st.last_id
        lag = 0
        while True:
            target = self._first_live.get(st.venue_symbol)
            if target is not None and target.first_id <= st.last_id + 1:
                return out  # the first live trade follows the last delivered one: no gap
            horizon = target.time if target is not None else self._horizon
            if st.last_time is not None and horizon is not None \
                    and horizon - st.last_time > self.settings.max_gap:
                log.warning("%s: %s was down %.0f s, longer than max_gap=%g s; its missed "
                            "trades are not replayed", self.venue.name, st.venue_symbol,
                            horizon - st.last_time, self.settings.max_gap)
                return None
            trades, cursor, more = await self.venue.trade_page(self.http, st, cursor, horizon)
            for t in trades:
                if t.last_id > newest and (target is None or t.first_id < target.first_id):
                    out.append(t)
                newest = max(newest, t.last_id)
            if len(out) > MAX_REPLAY:
                log.warning("%s: more than %d trades missed by %s; not replayed",
                            self.venue.name, MAX_REPLAY, st.venue_symbol)
                return None
            if target is not None and newest >= target.first_id - 1:
                return out
            if not more:
                if target is None or lag >= LAG_RETRIES:
                    return out
                # REST has not caught up with the live stream yet: ask again shortly.
                lag += 1
                await trio.sleep(LAG_WAIT)


def _closed(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "connection closed"
    text = f"closed by the venue: {reason.code} {reason.name}"
    return text + (f" ({reason.reason})" if reason.reason else "")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRejected):
        return f"the server refused the websocket with HTTP {exc.status_code}"
    if isinstance(exc, ConnectionTimeout | trio.TooSlowError):
        return "timed out"
    cause = exc.__cause__ or exc.__context__
    if not str(exc) and cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(exc) or type(exc).__name__


def _first(value, fallback):
    return value if value is not None else fallback
