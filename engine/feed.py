"""The feed layer: run a provider, keep its ticks and bars in shared memory, fan quotes out.

`open_feed` performs the provider start-up sequence, loads history through `backfill_bars`
(paged until it covers the run's warm-up: engine.feed_history), writes every tick into a tick ShmArray and keeps one OHLCV ShmArray per symbol, closed bars only,
built by the sampler from live trades and closed by the clock in quiet periods. Both kinds of
segment roll (`ShmArray(rolling=True)`): when full they keep their newest half, so a feed runs
for ever. A provider that replays history (its symbol info says `"replay": True`) has its bars
closed by data time instead of the clock: by its quotes' own `time`, so a replay faster than real
time neither invents empty bars for the hours the clock runs ahead nor drops its trades as late.
The provider's channel is the feed's own inbox: the first quote of each provider turn is
processed within the provider's `send_nowait` itself, and what follows it in the turn (or comes
in a burst) waits for the pump task as one batch. Subscribers get each batch of quotes and the
bars that closed, then their `flush` hooks run (where a strategy runner calls a waiting
strategy's on_quote, engine.scheduler): a quiet market's tick reaches `on_quote` without a
task switch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from engine.clock import Clock, current_clock, use_clock
from engine.dtypes import TICK_TYPES, ohlc_dtype, tick_dtype
from engine.feed_history import HISTORY_CAP, HistoryLoad, HistoryTooLarge, load_history
from engine.provider import Provider, load_provider
from engine.quotes import FEED_STATUSES, FeedStatusChanged, QuoteError, validate_quote
from engine.sampler import Sampler
from engine.shm import ShmArray

__all__ = ["Feed", "FeedError", "open_feed"]

log = logging.getLogger("engine.feed")

# Called with each batch: valid quotes, symbols whose bar closed (in order), status events.
Subscriber = Callable[[list[dict], list[str], list[FeedStatusChanged]], None]


class FeedError(RuntimeError):
    """The provider broke the start-up sequence or the feed could not start."""


@dataclass
class FeedStats:
    quotes: int = 0
    ticks: int = 0
    rejected: int = 0
    bars: int = 0
    last_error: str | None = None


@dataclass
class Feed:
    """A running feed: symbols, shared-memory arrays, latest quotes and counters."""

    provider: Provider
    symbols: list[str]
    timeframe: int
    clock: Clock
    ticks: ShmArray
    bars: dict[str, ShmArray]
    sampler: Sampler
    init_msgs: dict[str, Any] = field(default_factory=dict)
    quotes: dict[str, dict] = field(default_factory=dict)
    history: dict[str, HistoryLoad] = field(default_factory=dict)  # what each backfill gave
    stats: FeedStats = field(default_factory=FeedStats)
    is_live: trio.Event = field(default_factory=trio.Event)
    _subscribers: list[Subscriber] = field(default_factory=list)
    _flushes: dict[Subscriber, Callable[[], None]] = field(default_factory=dict)

    def subscribe(self, fn: Subscriber, flush: Callable[[], None] | None = None) -> None:
        """Call `fn(quotes, closed_bar_symbols, events)` for every batch the feed processes,
        and `flush()` once every subscriber has that batch (a strategy runner queues with
        `fn` and calls the strategy in `flush`: a broker subscribed after it still sees the
        quotes before the strategy acts on them)."""
        self._subscribers.append(fn)
        if flush is not None:
            self._flushes[fn] = flush

    def unsubscribe(self, fn: Subscriber) -> None:
        if fn in self._subscribers:
            self._subscribers.remove(fn)
        self._flushes.pop(fn, None)

    def tokens(self) -> dict[str, Any]:
        """Shared-memory tokens a process needs to read this feed's ticks and bars in place."""
        return {"ticks": self.ticks.token.model_dump(),
                "bars": {s: shm.token.model_dump() for s, shm in self.bars.items()}}

    # -- the hot path --------------------------------------------------------------------------

    def _msg_rows(self, msg: dict, now: float) -> list[tuple]:
        """A quote's tick rows, checked as they are built (cheaper than array passes over a
        handful of rows); a tick without a time gets the quote's, else `now`."""
        sym = self._index[msg["symbol"]]
        t = msg.get("time")
        last = msg.get("last")
        if last is not None and not math.isfinite(last):
            raise ValueError("last is not finite")
        types, isfinite = TICK_TYPES, math.isfinite
        rows = []
        for tick in msg.get("ticks", ()):
            tt = tick.get("time", t)
            price = float(tick["price"])
            size = float(tick.get("size", 0.0))
            if not (isfinite(price) and isfinite(size) and size >= 0):
                raise ValueError("non-finite or negative number")
            rows.append((0, now if tt is None else float(tt), price, size, sym,
                         types[tick["type"]]))
        return rows

    def _rows(self, batch: list[dict]) -> tuple[np.ndarray, list[dict]]:
        """Tick rows of a batch and its valid quotes; a bad quote is reported and dropped."""
        now = self.clock.now()
        try:
            tuples: list[tuple] = []
            for msg in batch:
                tuples.extend(self._msg_rows(msg, now))
            return np.array(tuples, dtype=tick_dtype), batch
        except Exception:  # noqa: BLE001 - the slow path below finds and names the culprit
            pass
        good: list[dict] = []
        parts: list[np.ndarray] = []
        for msg in batch:
            try:
                rows = np.array(self._msg_rows(msg, now), dtype=tick_dtype)
            except Exception:  # noqa: BLE001 - _reject says exactly what is wrong
                self._reject(msg)
                continue
            parts.append(rows)
            good.append(msg)
        rows = np.concatenate(parts) if parts else np.empty(0, dtype=tick_dtype)
        return rows, good

    def _reject(self, msg: Any) -> None:
        try:
            validate_quote(msg, self.provider.name, self.symbols)
            err = QuoteError(self.provider.name, str(msg.get("symbol", "?")), "<message>",
                             "could not be converted to ticks")
        except QuoteError as exc:
            err = exc
        except Exception as exc:  # noqa: BLE001 - not even a mapping: say so
            err = QuoteError(self.provider.name, "?", "<message>", f"{type(exc).__name__}: {exc}")
        self.stats.rejected += 1
        self.stats.last_error = str(err)
        # One line per bad quote, rate-limited so a broken provider cannot flood the terminal.
        if self.stats.rejected <= 10 or self.stats.rejected % 1000 == 0:
            log.error("%s (quote skipped; %d rejected so far)", err, self.stats.rejected)

    def process(self, batch: list[dict]) -> None:
        """Validate a batch of quotes, store its ticks, sample bars and notify subscribers."""
        events: list[FeedStatusChanged] = []
        if any("feed_status" in msg for msg in batch if isinstance(msg, dict)):
            kept = []
            for msg in batch:
                if isinstance(msg, dict) and "feed_status" in msg:
                    event = self._status(msg)
                    if event is not None:
                        events.append(event)
                else:
                    kept.append(msg)
            batch = kept
        rows, good = self._rows(batch)
        if len(rows):
            self.ticks.push(rows)
            closed = self.sampler.fold(rows)
        else:
            closed = []
        if self.by_data_time and good:
            closed += self._close_by_data(rows, good)
        for msg in good:
            self.quotes[msg["symbol"]] = msg
        self.stats.quotes += len(good)
        self.stats.ticks += len(rows)
        self._notify(good, closed, events)
        if not self._wake.is_set():
            self._wake.set()

    @property
    def by_data_time(self) -> bool:
        """True when bars close by the data's own time: every symbol's info says `replay`."""
        msgs = self.init_msgs
        if self._by_data is None or self._by_data[0] is not msgs:
            infos = [info for info in msgs.values() if isinstance(info, dict)]
            self._by_data = (msgs, bool(infos) and all(info.get("replay") is True
                                                       for info in infos))
        return self._by_data[1]

    def _close_by_data(self, rows: np.ndarray, good: list[dict]) -> list[int]:
        # A replay sends in time order: once data time passes a bar's end, that bar is complete.
        # Quotes without ticks count too (a replay's last quote says where its data ends).
        times = [float(m["time"]) for m in good if isinstance(m.get("time"), int | float)]
        if len(rows):
            times.append(float(rows["time"].max()))
        now = max((t for t in times if math.isfinite(t)), default=None)
        if now is None or now <= self.data_time:
            return []
        self.data_time = now
        return self.sampler.close_until(now)

    def _status(self, msg: dict) -> FeedStatusChanged | None:
        status = msg.get("feed_status")
        symbols = msg.get("symbols") or self.symbols
        unknown = [s for s in symbols if s not in self._index]
        if status not in FEED_STATUSES or unknown or not isinstance(symbols, list):
            self._reject_status(msg, f"status must be one of {', '.join(FEED_STATUSES)} "
                                     f"for requested symbols (got {status!r} for {symbols!r})")
            return None
        held = status in ("disconnected", "stale")
        for sym in symbols:
            self.sampler.hold(self._index[sym], held)
            self.status[sym] = status
        log.warning("provider %r: %s %s%s", self.provider.name, status, ", ".join(symbols),
                    f": {msg['reason']}" if msg.get("reason") else "")
        return FeedStatusChanged(provider=self.provider.name, status=status, symbols=list(symbols),
                                 reason=str(msg.get("reason", "")), time=self.clock.now())

    def _reject_status(self, msg: dict, reason: str) -> None:
        self.stats.rejected += 1
        self.stats.last_error = f"provider {self.provider.name!r} sent a bad feed_status: {reason}"
        log.error("%s", self.stats.last_error)

    @property
    def close_delay(self) -> float:
        """Seconds the clock waits past a bar's end before closing it: the largest
        `close_delay` a symbol's info declares (a venue's trades arrive after they happen)."""
        delays = [float(info.get("close_delay", 0.0) or 0.0) for info in self.init_msgs.values()
                  if isinstance(info, dict)]
        return max(delays, default=0.0)

    def close_bars(self) -> None:
        """Close bars whose period ended by the clock (quiet periods give flat bars)."""
        closed = self.sampler.close_until(self.clock.now() - self.close_delay)
        if closed:
            self._notify([], closed, [])

    def _notify(self, quotes: list[dict], closed: list[int], events: list[FeedStatusChanged]
                ) -> None:
        names = [self.symbols[i] for i in closed]
        self.stats.bars += len(names)
        if not quotes and not names and not events:
            return
        for fn in list(self._subscribers):
            fn(quotes, names, events)
        for flush in list(self._flushes.values()):
            flush()

    def __post_init__(self) -> None:
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self._wake = trio.Event()
        self.status: dict[str, str] = {}
        self.data_time = -math.inf  # newest quote time seen, when bars close by data time
        self._by_data: tuple[dict, bool] | None = None  # by_data_time, for these init_msgs


@asynccontextmanager
async def open_feed(
    provider: Provider | str,
    symbols: list[str],
    *,
    timeframe: int = 1,
    history: int = 10,
    warmup: int = 0,
    history_rows: int = 200_000,
    history_cap: int = HISTORY_CAP,
    live_bars: int = 1_000_000,
    tick_rows: int = 1 << 22,
    clock: Clock | None = None,
    queue: int = 10_000,
) -> AsyncIterator[Feed]:
    """Start a provider's stream for `symbols` and keep ticks and `timeframe`-second bars in shm.

    `history` is how many frames `backfill_bars` fetches per symbol at first, into a buffer of
    `history_rows` rows at the provider's resolution; when that gives fewer than `warmup`
    closed bars of `timeframe`, the feed asks again for enough frames, until it has them or the
    provider has no more, in a buffer of up to `history_cap` rows (engine.feed_history). With
    `history` and `warmup` both 0 nothing is backfilled. The bar segments hold
    `max(history_rows, warmup)` bars of history and `live_bars` rows of room after them. Bar
    and tick segments roll when full, keeping their newest half (`history_rows + live_bars`
    and `tick_rows` are their capacities). Exits cancel the provider and unlink every segment
    the feed created.
    """
    if not symbols:
        raise FeedError("no symbols to stream")
    if len(set(symbols)) != len(symbols):
        raise FeedError(f"duplicate symbols in {symbols}")
    provider = load_provider(provider) if isinstance(provider, str) else provider
    clock = clock or current_clock()
    use_clock(clock)
    async with AsyncExitStack() as stack:
        ticks = stack.enter_context(ShmArray.create(tick_dtype, tick_rows, start=0,
                                                    rolling=True))
        room = max(history_rows, warmup + 2)
        bars = {s: stack.enter_context(ShmArray.create(ohlc_dtype, room + live_bars,
                                                       start=room, rolling=True))
                for s in symbols}
        sampler = Sampler(timeframe, [bars[s] for s in symbols])
        feed = Feed(provider=provider, symbols=list(symbols), timeframe=timeframe, clock=clock,
                    ticks=ticks, bars=bars, sampler=sampler)
        if history > 0 or warmup > 0:
            for s, sym in enumerate(symbols):
                try:
                    feed.history[sym] = await load_history(
                        provider, sym, frames=history, need=warmup, capacity=history_rows,
                        timeframe=timeframe, bars=bars[sym], sampler=sampler, s=s,
                        cap=history_cap)
                except HistoryTooLarge as exc:
                    raise FeedError(f"provider {provider.name!r}: {exc}") from None
                except Exception as exc:
                    raise FeedError(f"provider {provider.name!r}: backfill of {sym!r} failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
        sampler.warm()
        nursery = await stack.enter_async_context(trio.open_nursery())
        send = _Inbox(feed, queue)
        try:
            init_msgs, first_quotes = await nursery.start(
                provider.stream_quotes, send, list(symbols), ticks, feed.is_live,
                logging.getLevelName(log.getEffectiveLevel()).lower())
        except Exception as exc:
            raise FeedError(f"provider {provider.name!r} failed to start streaming "
                            f"{symbols}: {type(exc).__name__}: {exc}") from exc
        for sym in symbols:
            if sym not in first_quotes:
                raise FeedError(f"provider {provider.name!r} sent no first quote for {sym!r}")
            try:
                validate_quote(first_quotes[sym], provider.name, symbols, require_last=True)
            except QuoteError as exc:
                raise FeedError(str(exc)) from None
            feed.quotes[sym] = first_quotes[sym]
        feed.init_msgs = dict(init_msgs)
        nursery.start_soon(_pump, feed, send)
        if not feed.by_data_time:
            nursery.start_soon(_close_by_clock, feed)
        try:
            yield feed
        finally:
            nursery.cancel_scope.cancel()


# A provider turn that sent more quotes than this is a burst: the next turn's first quote waits
# for the pump with the rest (one batch), so a busy feed keeps its throughput.
_BURST = 8
# Most quotes in one batch: one numpy write and one sampler call each.
_BATCH = 512


class _Inbox(trio.abc.SendChannel):
    """The provider's channel into the feed. The first quote of a provider's turn is processed
    in the provider's own `send_nowait` (no task switch between a tick and the strategies);
    quotes sent after it in the same turn, or while the feed is busy, wait for the pump task,
    which takes them as one batch on its next turn. Holds `size` quotes at most (then `send`
    waits, `send_nowait` raises WouldBlock)."""

    def __init__(self, feed: Feed, size: int) -> None:
        self._feed = feed
        self._size = size
        self._queue: list = []
        self._pump = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self.open = False  # set by the pump: nothing is processed before the feed is set up
        self._turn = False  # a quote was processed in a send since the pump last ran
        self._burst = 0  # quotes in the pump's last batch
        self._closed = False

    def send_nowait(self, value: Any) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        if self.open and not self._queue and not self._turn and self._burst <= _BURST:
            self._turn = True
            if self._pump:  # it runs next turn, and the turn after this one is new
                self._pump.unpark_all()
            self._feed.process([value])
            return
        if len(self._queue) >= self._size:
            raise trio.WouldBlock
        self._queue.append(value)
        if self._pump:
            self._pump.unpark_all()

    async def send(self, value: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.send_nowait(value)
                break
            except trio.WouldBlock:
                await self._room.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()

    def take(self) -> list:
        """Up to `_BATCH` queued quotes, oldest first; the turn is over."""
        batch = self._queue[:_BATCH]
        del self._queue[:_BATCH]
        self._turn = False
        self._burst = len(batch)
        if self._room:
            self._room.unpark_all()
        return batch


async def _pump(feed: Feed, inbox: _Inbox) -> None:
    inbox.open = True
    while True:
        if not inbox._queue:
            await inbox._pump.park()
        batch = inbox.take()  # empty when woken only to end a turn
        if batch:
            feed.process(batch)
            await trio.lowlevel.checkpoint()  # a long queue still lets the provider run


async def _close_by_clock(feed: Feed) -> None:
    # Until the provider says real-time data flows, it may still be catching up on the past:
    # closing bars by the clock then would shut out trades that are on their way.
    await feed.is_live.wait()
    while True:
        due = feed.sampler.next_close()
        if due is None:
            # Nothing forms yet (or every symbol is held): wait for the next batch.
            feed._wake = trio.Event()
            await feed._wake.wait()
            continue
        await feed.clock.sleep_until(due + feed.close_delay)
        feed.close_bars()
