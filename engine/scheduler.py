"""The scheduler: hands a feed's quotes and closed bars to each strategy through its own mailbox.

Each strategy has a bounded mailbox. When a strategy falls behind and its mailbox is full, newer
quotes are coalesced to the newest per symbol (counted and reported), bar events are never
dropped, and neither the feed nor other strategies wait for it. A strategy whose callback raises
is stopped and reported with its own traceback lines; the others run on.

Callbacks run inline on the loop. A strategy that declares `blocking = True`, or whose synchronous
callback holds the loop past the watchdog's budget (engine.watchdog), has its synchronous
callbacks run in its own worker thread from then on (engine.worker), events still in order.

While a strategy's task waits for its mailbox, the feed's own call takes the quotes at the head
of it to a synchronous `on_quote` (`flush`, after every subscriber has the batch), so a tick
reaches the strategy without a task switch. Bars, events and whatever queued behind them wait
for the task as before, so the order of events is the same either way.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from engine.clock import Clock
from engine.sampler import format_timeframe, parse_timeframe
from engine.strategy import (
    Context,
    OrderRouter,
    Strategy,
    StrategyError,
    overrides,
    strategy_traceback,
)
from engine.timeframes import BarDispatch, add_timeframes, declared_timeframes, fold_history
from engine.warming import WarmGate
from engine.watchdog import Watchdog
from engine.worker import StrategyThread, ThreadContext

__all__ = ["Mailbox", "StrategyRunner", "RunnerStats", "callback_for"]

log = logging.getLogger("engine.scheduler")

QUOTE, BAR, EVENT = 0, 1, 2
# Mailbox items a runner puts for itself: an error raised by an on_quote `flush` called (the
# runner's task re-raises it, so the strategy stops as if the call had run there), and a
# wake-up after an on_quote `flush` called overran its budget (the runner moves to its thread).
_RAISE, _WAKE = 3, 4

# Which callback hears which event; any other order event goes to on_order.
EVENT_CALLBACKS = {
    "FeedStatusChanged": "on_feed_status",
    "OrderFilled": "on_fill",
    "OrderRejected": "on_order_rejected",
    "OrderAccepted": "on_order",
    "OrderCancelled": "on_order",
    "OrderModified": "on_order",
    "OrderTriggered": "on_order",
}


def callback_for(event: Any) -> str:
    """The name of the strategy callback that handles `event` (replays use it too)."""
    return EVENT_CALLBACKS.get(type(event).__name__, "on_order")


class Mailbox:
    """A strategy's bounded inbox: quotes up to `capacity`, then the newest per symbol."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._queue: deque[tuple[int, Any]] = deque()
        self._pending: dict[str, dict] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self.coalesced = 0
        self.closed = False
        # Stamping (see `stamp_with`): when each queued item, or each pending symbol, arrived.
        self._now: Callable[[], float] | None = None
        self._times: deque[float] = deque()
        self._since: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._queue) + len(self._pending)

    def stamp_with(self, now: Callable[[], float]) -> None:
        """From now on, note `now()` when items arrive, for `get_stamped` (what is already
        waiting counts from this moment). Costs the hot path nothing until called."""
        t = now()
        self._now = now
        self._times = deque([t] * len(self._queue))
        self._since = dict.fromkeys(self._pending, t)

    def put(self, quotes: list[dict], bars: list[str], events: list | tuple = (), *,
            wake: bool = True) -> None:
        """Queue a batch (never blocks); called by the feed for every batch. With `wake`
        False the reader is not woken (its runner takes the items itself, `flush`)."""
        if self.closed:
            return
        if self._now is not None:
            self._put_stamped(quotes, bars, events)
            return
        queue, pending = self._queue, self._pending
        for q in quotes:
            sym = q["symbol"]
            # Once a symbol is coalescing, its newer quotes replace the pending one: per-symbol
            # order holds because the pending quote is delivered after everything queued.
            if sym in pending:
                pending[sym] = q
                self.coalesced += 1
            elif len(queue) < self.capacity:
                queue.append((QUOTE, q))
            else:
                pending[sym] = q
                self.coalesced += 1
        for sym in bars:
            queue.append((BAR, sym))
        for event in events:
            queue.append((EVENT, event))
        if wake and self._lot:
            self._lot.unpark_all()

    def wake(self) -> None:
        """Wake the reader waiting in `get`."""
        if self._lot:
            self._lot.unpark_all()

    def head(self) -> int | None:
        """The kind of the next item, None when empty."""
        if self._queue:
            return self._queue[0][0]
        return QUOTE if self._pending else None

    def _put_stamped(self, quotes: list[dict], bars: list[str], events: list | tuple) -> None:
        assert self._now is not None
        t = self._now()
        queue, pending, times, since = self._queue, self._pending, self._times, self._since
        for q in quotes:
            sym = q["symbol"]
            if sym in pending:
                pending[sym] = q  # keeps its first arrival: the oldest news it stands for
                self.coalesced += 1
            elif len(queue) < self.capacity:
                queue.append((QUOTE, q))
                times.append(t)
            else:
                pending[sym] = q
                since[sym] = t
                self.coalesced += 1
        for sym in bars:
            queue.append((BAR, sym))
            times.append(t)
        for event in events:
            queue.append((EVENT, event))
            times.append(t)
        if self._lot:
            self._lot.unpark_all()

    def put_own(self, kind: int, item: Any) -> None:
        """Put an item of the runner's own (`_RAISE`, `_WAKE`) first, even when closed."""
        self._queue.appendleft((kind, item))
        if self._now is not None:
            self._times.appendleft(self._now())
        if self._lot:
            self._lot.unpark_all()

    def get_nowait(self) -> tuple[int, Any] | None:
        if self._queue:
            return self._queue.popleft()
        if self._pending:
            sym = next(iter(self._pending))
            return QUOTE, self._pending.pop(sym)
        return None

    async def get(self) -> tuple[int, Any]:
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            await self._lot.park()

    async def get_stamped(self) -> tuple[int, Any, float]:
        """The next item and when it arrived (after `stamp_with`)."""
        while True:
            if self._queue:
                kind, item = self._queue.popleft()
                return kind, item, self._times.popleft()
            if self._pending:
                sym = next(iter(self._pending))
                return QUOTE, self._pending.pop(sym), self._since.pop(sym)
            await self._lot.park()

    def oldest(self) -> float | None:
        """When the oldest waiting item arrived (after `stamp_with`), None when empty."""
        first = [self._times[0]] if self._times else []
        return min([*first, *self._since.values()], default=None)

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._pending.clear()
        self._times.clear()
        self._since.clear()


@dataclass
class RunnerStats:
    quotes: int = 0
    bars: int = 0
    events: int = 0
    error: str | None = None
    stopped: bool = False
    # A strategy whose synchronous callbacks run in its own worker thread: why, and since when
    # (engine clock, epoch seconds).
    off_loop: str | None = None
    off_loop_since: float | None = None
    held: float = 0.0  # seconds the longest callback held the event loop, once it overran
    held_by: str | None = None  # that callback ("on_quote", "async on_bar")
    slowest: float = 0.0  # seconds, the longest callback in the worker thread
    lag: float = 0.0  # seconds, the longest an event waited in the mailbox once off the loop
    behind: float = 0.0  # seconds the oldest waiting event had waited when the run stopped
    stuck: str | None = None  # the callback still running in its thread when the run ended


def _where_in(exc: BaseException, default: str) -> str:
    """The callback `_run_inline` was in when `exc` left it (read from the traceback, so the
    hot path does not store it)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_run_inline":
            return str(tb.tb_frame.f_locals.get("where", default))
        tb = tb.tb_next
    return default


async def _call(fn: Any, is_async: bool, *args: Any) -> None:
    if is_async:
        await fn(*args)
    else:
        fn(*args)


# Seconds stop() waits for a strategy's current callback and its on_stop.
STOP_BUDGET = 5.0


@dataclass
class StrategyRunner:
    """Runs one strategy instance: start, deliver mailbox items to callbacks, stop.

    Callbacks run inline on the loop; a strategy that declares `blocking = True`, or whose
    synchronous callback overruns the watchdog's budget, has its synchronous callbacks run in
    its own worker thread from then on (async ones stay on the loop), events still in order.
    """

    strategy: Strategy
    context: Context
    mailbox: Mailbox = field(default_factory=Mailbox)
    stats: RunnerStats = field(default_factory=RunnerStats)
    source: Path | None = None
    watchdog: Watchdog | None = None

    def __post_init__(self) -> None:
        self.strategy.ctx = self.context
        self.source = self.source or getattr(type(self.strategy), "__source_path__", None)
        self._async = {name: inspect.iscoroutinefunction(getattr(self.strategy, name))
                       for name in ("on_start", "on_quote", "on_bar", "on_bars", "on_stop",
                                    *set(EVENT_CALLBACKS.values()))}
        cls = type(self.strategy)
        # Skip delivering what the strategy ignores: the base class's callbacks do nothing.
        self._wants_quotes = overrides(cls, "on_quote")
        self._dispatch = BarDispatch(self.strategy, self.context)
        # Per-symbol on_bar on one timeframe: called straight from the loop, the fast path.
        self._wants_bars = self._dispatch.active and self._dispatch.simple
        self._bar_where = "on_bars" if self._dispatch.grouped else "on_bar"
        self._grace_at: float | None = None  # when a gathered on_bars step is called anyway
        self._overrun: tuple[str, float] | None = None  # set by the watchdog thread
        self._worker: StrategyThread | None = None
        self._where = "on_quote"  # the callback being run off the loop
        # Warm-up (engine.warming): set after on_start; not called for a cold symbol.
        self._gate: WarmGate | None = None
        # True while the runner's task waits for its mailbox on the loop: `flush` may then
        # call a synchronous on_quote itself for the quotes at the head of the mailbox.
        self._idle = False
        self._quote_direct = self._wants_quotes and not self._async["on_quote"]

    @property
    def name(self) -> str:
        return self.strategy.name

    @property
    def off_loop(self) -> bool:
        """Whether its synchronous callbacks run in its own worker thread."""
        return self._worker is not None

    def deliver(self, quotes: list[dict], bars: list[str], events: list | tuple = ()) -> None:
        """Queue a batch and call what can be called now (`queue`, then `flush`)."""
        self.queue(quotes, bars, events)
        self.flush()

    def queue(self, quotes: list[dict], bars: list[str], events: list | tuple = ()) -> None:
        """Queue a batch; a feed with several subscribers queues the batch with each of them
        before it `flush`es any, so a broker has the quotes before a strategy acts on them
        (and the fills they cause queue after them)."""
        # Bar events always go through: they also move what the strategy's ohlcv() shows.
        self.mailbox.put(quotes if self._wants_quotes else [], bars, events,
                         wake=not self._direct_now())

    def _direct_now(self) -> bool:
        return self._idle and self._quote_direct and self._overrun is None

    def flush(self) -> None:
        """Call on_quote for the quotes at the head of the mailbox here and now, while the
        runner's task waits on the loop (the rest wait for it: bars, events, the quotes behind
        them, everything once a callback overran or raised)."""
        box = self.mailbox
        if self._direct_now() and box.head() == QUOTE:
            self._quotes_now()
        if box:
            box.wake()

    def _quotes_now(self) -> None:
        where = "on_quote"  # read by the watchdog thread from this frame, like `self`
        wd = self.watchdog
        assert wd is not None
        stats, gate, on_quote, box = self.stats, self._gate, self.strategy.on_quote, self.mailbox
        try:
            while box.head() == QUOTE:
                q = box.get_nowait()[1]  # type: ignore[index]
                if gate is not None and gate.cold(q["symbol"]):
                    continue  # warm-up
                stats.quotes += 1
                wd.who = self
                on_quote(q)
                wd.who = None
                if self._overrun is not None:
                    self._idle = False
                    box.put_own(_WAKE, None)
                    return
        except KeyboardInterrupt as exc:
            wd.who = None
            if wd.interrupting is not self:
                raise
            self._raise_later(where, exc)
        except Exception as exc:
            wd.who = None
            self._raise_later(where, exc)

    def _raise_later(self, where: str, exc: BaseException) -> None:
        self._idle = False
        self.mailbox.put_own(_RAISE, (where, exc))

    def deliver_events(self, events: list) -> None:
        """Queue broker events (fills, rejections, ...) for the strategy, in order."""
        self.mailbox.put([], [], events)

    def overran(self, where: str, held: float) -> None:
        """The watchdog thread's note that callback `where` has held the loop `held` seconds."""
        self._overrun = (where, time.monotonic() - held)  # first: the call may end any moment
        if where == "on_start":
            # Start-up is where warm-up belongs (indicators compile there): it is not held
            # against the strategy, though a start that never ends is still interrupted.
            log.info("strategy %s: on_start has held the event loop for %.0f ms", self.name,
                     held * 1e3)
        elif self._async.get(where):
            log.warning("strategy %s: async %s has held the event loop for %.0f ms: async "
                        "callbacks run on the loop and must not block (use `await "
                        "trio.to_thread.run_sync(...)` for blocking work)", self.name, where,
                        held * 1e3)
        else:
            log.warning("strategy %s: %s has held the event loop for %.0f ms (budget %.0f ms); "
                        "its callbacks run in its own worker thread from now on", self.name,
                        where, held * 1e3, self.watchdog.budget * 1e3 if self.watchdog else 0)

    def _fail(self, where: str, exc: BaseException) -> None:
        tb = strategy_traceback(exc, self.source)
        self.stats.error = f"{self.name}.{where} raised:\n{tb}"
        log.error("strategy %s stopped: %s", self.name, self.stats.error)

    async def run(self, started: trio.Event | None = None) -> None:
        """Run until cancelled or a callback raises; on_stop runs on a clean stop.

        Without a watchdog given, the runner starts its own with the default budget."""
        if self.watchdog is None:
            with Watchdog() as self.watchdog:
                await self._run(started)
        else:
            await self._run(started)

    async def _run(self, started: trio.Event | None) -> None:
        wd = self.watchdog
        assert wd is not None
        if getattr(type(self.strategy), "blocking", False):
            self._go_off_loop("declared blocking")
        try:
            try:
                await self._start()
            finally:
                if started is not None:
                    started.set()
            if self._worker is None:
                if self._overran() is None:
                    await self._run_inline()
                self._go_off_loop()
            await self._run_off_loop()
        except trio.Cancelled:
            wd.who = None
            with trio.CancelScope(shield=True):
                await self.stop()
            raise
        except KeyboardInterrupt:
            wd.who = None
            if wd.interrupting is not self:
                raise
            held = time.monotonic() - self._overrun[1] if self._overrun else 0.0
            where = self._overrun[0] if self._overrun else self._where
            self.stats.held, self.stats.held_by = held, where
            self.stats.error = (f"{self.name}.{where} was interrupted after holding the event "
                                f"loop for {held:.2f} s, when the run had to end")
            log.error("strategy %s stopped: %s", self.name, self.stats.error)
            self.mailbox.close()
        except Exception as exc:
            wd.who = None
            self._fail(_where_in(exc, self._where), exc)
            self.mailbox.close()
        finally:
            if self._worker is not None:
                self._worker.close()

    async def _start(self) -> None:
        where = self._where = "on_start"  # read by the watchdog thread from this frame
        on_start = self.strategy.on_start
        if self._worker is not None and not self._async[where]:
            await self._worker.call(where, on_start)
        else:
            wd = self.watchdog
            assert wd is not None
            wd.who = self
            await _call(on_start, self._async[where])
            wd.who = None
        self._where = "on_quote"
        # History already visible builds the higher timeframes; callbacks wait until warm
        # (the gate for quotes and per-symbol bars, the dispatch for the rest).
        fold_history(self.context, self.context.symbols)
        self._gate = WarmGate.after_start(self.strategy, self.context)
        self._dispatch.warm = self._gate.bars if self._gate is not None else 0
        # Indicators compute over the history now, as part of start-up: their kernels load (or
        # compile) here, not in the first on_bar, which would overrun its budget doing so.
        for source in self.context._sources:
            source.catch_up(self.context._seen[source.key][0])

    def _overran(self) -> str | None:
        """The synchronous callback that overran its budget, if one did (then the strategy moves
        to its thread); an async one is recorded and forgotten (a coroutine cannot move)."""
        if self._overrun is None:
            return None
        overrun, held0 = self._overrun
        if overrun == "on_start":
            self._overrun = None
            return None
        held = time.monotonic() - held0
        if not self._async.get(overrun):
            self.stats.held, self.stats.held_by = held, overrun
            return overrun
        self._overrun = None
        if held > self.stats.held:
            self.stats.held, self.stats.held_by = held, f"async {overrun}"
        return None

    async def _run_inline(self) -> None:
        """Deliver events inline until a synchronous callback overruns."""
        s = self.strategy
        wd = self.watchdog
        assert wd is not None
        stats, context = self.stats, self.context
        on_quote, on_bar = s.on_quote, s.on_bar
        aq, ab = self._async["on_quote"], self._async["on_bar"]
        wants_bars = self._wants_bars
        dispatch = None if self._dispatch.simple else self._dispatch
        gate = self._gate
        where = "on_quote"
        n = 0
        # The watchdog reads `wd.who` (and this runner's counters) from its thread: a callback
        # that keeps the same mark for a budget has held the loop that long.
        while True:
            self._idle = True
            try:
                got = await self._next()
            finally:
                self._idle = False
            if got is None:  # an on_bars step's grace ran out
                await self._bar_calls(self._dispatch.flush())
                continue
            kind, item = got
            if kind == QUOTE:
                if gate is not None and gate.cold(item["symbol"]):
                    continue  # warm-up
                where = "on_quote"
                stats.quotes += 1
                wd.who = self
                if aq:
                    await on_quote(item)
                else:
                    on_quote(item)
                wd.who = None
            elif kind == BAR:
                where = "on_bar"
                stats.bars += 1
                context.bar_closed(item)
                if wants_bars and (gate is None or not gate.cold(item)):
                    wd.who = self
                    if ab:
                        await on_bar(item)
                    else:
                        on_bar(item)
                    wd.who = None
                elif dispatch is not None:
                    where = self._bar_where
                    await self._bar_calls(self._bar_closed(item))
            elif kind == EVENT:
                where = callback_for(item)
                stats.events += 1
                wd.who = self
                await _call(getattr(s, where), self._async[where], item)
                wd.who = None
            elif kind == _RAISE:
                where, exc = item
                raise exc  # from an on_quote `flush` called: the strategy stops here on it
            if self._overrun is not None and self._overran() is not None:
                return
            n += 1
            if n % 512 == 0:
                # A busy strategy still yields, so the feed and others keep their turn.
                await trio.lowlevel.checkpoint()

    def _go_off_loop(self, why: str | None = None) -> None:
        if why is None and self._overrun is not None:
            why = f"{self._overrun[0]} held the event loop for {self.stats.held:.2f} s"
        self.stats.off_loop = why
        self.stats.off_loop_since = self.context.clock.now()
        self._worker = StrategyThread(self.name)
        ThreadContext.adopt(self.context)
        self.mailbox.stamp_with(self.context.clock.now)

    async def _run_off_loop(self) -> None:
        """Deliver events with synchronous callbacks in the worker thread, in order."""
        s = self.strategy
        worker, wd = self._worker, self.watchdog
        assert worker is not None
        assert wd is not None
        stats, context, now = self.stats, self.context, self.context.clock.now
        wants_bars, gate = self._wants_bars, self._gate
        dispatch = None if self._dispatch.simple else self._dispatch
        while True:
            got = await self._next(stamped=True)
            if got is None:  # an on_bars step's grace ran out
                await self._bar_calls(self._dispatch.flush())
                continue
            kind, item, queued = got
            if kind == _WAKE:
                continue  # already off the loop
            if kind == _RAISE:
                self._where, exc = item
                raise exc
            stats.lag = max(stats.lag, now() - queued)
            if kind == QUOTE:
                if gate is not None and gate.cold(item["symbol"]):
                    continue  # warm-up
                self._where = "on_quote"
                stats.quotes += 1
            elif kind == BAR:
                self._where = "on_bar"
                stats.bars += 1
                context.bar_closed(item)
                if dispatch is not None:
                    self._where = self._bar_where
                    await self._bar_calls(self._bar_closed(item))
                    continue
                if not wants_bars or (gate is not None and gate.cold(item)):
                    continue
            else:
                self._where = callback_for(item)
                stats.events += 1
            where = self._where
            fn = getattr(s, where)
            if self._async[where]:
                wd.who = self
                await fn(item)
                wd.who = None
            else:
                await worker.call(where, fn, item)
            stats.slowest = worker.slowest

    async def _next(self, stamped: bool = False) -> Any:
        """The next mailbox item, or None when a gathered on_bars step's grace runs out first."""
        get = self.mailbox.get_stamped if stamped else self.mailbox.get
        if self._grace_at is None:
            return await get()
        with trio.move_on_at(self._grace_at):
            return await get()
        self._grace_at = None
        return None

    def _bar_closed(self, symbol: str) -> list:
        """The bar calls due now that `symbol`'s bar closed; an on_bars step is called as soon
        as every symbol closed it, or when its grace runs out (engine.timeframes)."""
        d = self._dispatch
        calls = d.closed(symbol)
        if d.grouped:
            if d.complete:
                calls += d.flush()
                self._grace_at = None
            elif d.pending and (calls or self._grace_at is None):
                self._grace_at = trio.current_time() + d.grace
        return calls

    async def _bar_calls(self, calls: list) -> None:
        """Run bar callbacks (on the loop, or in the worker thread once there)."""
        wd = self.watchdog
        assert wd is not None
        where = self._bar_where
        for fn, args in calls:
            if self._async[where]:
                wd.who = self
                await fn(*args)
                wd.who = None
            elif self._worker is not None:
                await self._worker.call(where, fn, *args)
                self.stats.slowest = self._worker.slowest
            else:
                wd.who = self
                fn(*args)
                wd.who = None

    async def stop(self) -> None:
        self._idle = False  # no quote reaches it past this point
        if self.stats.stopped or self.stats.error:
            return
        self.stats.stopped = True
        worker = self._worker
        if worker is not None:
            oldest = self.mailbox.oldest()
            self.stats.behind = self.context.clock.now() - oldest if oldest is not None else 0.0
        self.mailbox.close()
        where = self._where = "on_stop"  # read by the watchdog thread from this frame
        wd = self.watchdog
        try:
            with trio.move_on_after(STOP_BUDGET):
                if worker is None or self._async[where]:
                    if wd is not None:
                        wd.who = self
                    await _call(self.strategy.on_stop, self._async[where])
                    if wd is not None:
                        wd.who = None
                else:
                    await worker.wait_idle()
                    await worker.call("on_stop", self.strategy.on_stop)
                    self.stats.slowest = worker.slowest
        except KeyboardInterrupt:
            if wd is None or wd.interrupting is not self:
                raise
            wd.who = None
            self.stats.error = f"{self.name}.on_stop was interrupted: it held the event loop"
            log.error("strategy %s: %s", self.name, self.stats.error)
            return
        except Exception as exc:
            if wd is not None:
                wd.who = None
            self._fail("on_stop", exc)
            return
        if worker is not None and worker.busy is not None:
            where, since = worker.busy
            self.stats.stuck = where
            self.stats.error = (f"{self.name}.{where} was still running in its worker thread "
                                f"after {time.monotonic() - since:.1f} s when the run ended; "
                                f"abandoned" + ("" if where == "on_stop" else ", on_stop not run"))
            log.error("strategy %s: %s", self.name, self.stats.error)


def _parses_to(label: Any, seconds: int) -> bool:
    try:
        return parse_timeframe(label) == seconds
    except ValueError:
        return False


def make_runner(strategy: Strategy, *, symbols: list[str], timeframe: int, bars: dict,
                quotes: dict, clock: Clock, router: OrderRouter, capacity: int = 1024,
                watchdog: Watchdog | None = None) -> StrategyRunner:
    """Build a runner whose context reads the feed's bars and quotes in place; `watchdog`
    (shared by a run's runners) watches its callbacks on the loop."""
    ctx = Context(symbols=symbols, timeframe=timeframe, bars=bars, quotes=quotes, clock=clock,
                  router=router, strategy_name=strategy.name)
    ctx.lot_sizes = dict(type(strategy).lot_sizes)
    cls = type(strategy)
    try:
        higher = declared_timeframes(cls, timeframe)
    except ValueError as exc:
        raise StrategyError(str(exc)) from None
    label = cls.timeframe if _parses_to(cls.timeframe, timeframe) else format_timeframe(timeframe)
    add_timeframes(ctx, higher, lambda s: bars[s].size, label)
    return StrategyRunner(strategy=strategy, context=ctx, mailbox=Mailbox(capacity),
                          watchdog=watchdog)
