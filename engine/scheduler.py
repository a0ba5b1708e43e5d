"""The scheduler: hands a feed's quotes and closed bars to each strategy through its own mailbox.

Each strategy has a bounded mailbox. When a strategy falls behind and its mailbox is full, newer
quotes are coalesced to the newest per symbol (counted and reported), bar events are never
dropped, and neither the feed nor other strategies wait for it. A strategy whose callback raises
is stopped and reported with its own traceback lines; the others run on.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from engine.clock import Clock
from engine.strategy import Context, OrderRouter, Strategy, strategy_traceback

__all__ = ["Mailbox", "StrategyRunner", "RunnerStats", "callback_for"]

log = logging.getLogger("engine.scheduler")

QUOTE, BAR, EVENT = 0, 1, 2

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


def overrides(cls: type, name: str) -> bool:
    """Whether a Strategy subclass defines callback `name` (the base class's do nothing)."""
    return getattr(cls, name) is not getattr(Strategy, name)


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

    def __len__(self) -> int:
        return len(self._queue) + len(self._pending)

    def put(self, quotes: list[dict], bars: list[str], events: list | tuple = ()) -> None:
        """Queue a batch (never blocks); called by the feed for every batch."""
        if self.closed:
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

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._pending.clear()


@dataclass
class RunnerStats:
    quotes: int = 0
    bars: int = 0
    error: str | None = None
    stopped: bool = False


async def _call(fn: Any, is_async: bool, *args: Any) -> None:
    if is_async:
        await fn(*args)
    else:
        fn(*args)


@dataclass
class StrategyRunner:
    """Runs one strategy instance: start, deliver mailbox items to callbacks, stop."""

    strategy: Strategy
    context: Context
    mailbox: Mailbox = field(default_factory=Mailbox)
    stats: RunnerStats = field(default_factory=RunnerStats)
    source: Path | None = None

    def __post_init__(self) -> None:
        self.strategy.ctx = self.context
        self.source = self.source or getattr(type(self.strategy), "__source_path__", None)
        self._async = {name: inspect.iscoroutinefunction(getattr(self.strategy, name))
                       for name in ("on_start", "on_quote", "on_bar", "on_stop", *set(EVENT_CALLBACKS.values()))}
        cls = type(self.strategy)
        # Skip delivering what the strategy ignores: the base class's callbacks do nothing.
        self._wants_quotes = overrides(cls, "on_quote")
        self._wants_bars = overrides(cls, "on_bar")

    @property
    def name(self) -> str:
        return self.strategy.name

    def deliver(self, quotes: list[dict], bars: list[str], events: list | tuple = ()) -> None:
        # Bar events always go through: they also move what the strategy's ohlcv() shows.
        self.mailbox.put(quotes if self._wants_quotes else [], bars, events)

    def deliver_events(self, events: list) -> None:
        """Queue broker events (fills, rejections, ...) for the strategy, in order."""
        self.mailbox.put([], [], events)

    def _fail(self, where: str, exc: BaseException) -> None:
        tb = strategy_traceback(exc, self.source)
        self.stats.error = f"{self.name}.{where} raised:\n{tb}"
        log.error("strategy %s stopped: %s", self.name, self.stats.error)

    async def run(self, started: trio.Event | None = None) -> None:
        """Run until cancelled or a callback raises; on_stop runs on a clean stop."""
        s = self.strategy
        on_quote, on_bar = s.on_quote, s.on_bar
        aq, ab = self._async["on_quote"], self._async["on_bar"]
        wants_bars = self._wants_bars
        try:
            await _call(s.on_start, self._async["on_start"])
        except Exception as exc:
            self._fail("on_start", exc)
            self.mailbox.close()
            return
        finally:
            if started is not None:
                started.set()
        where = "on_quote"
        try:
            n = 0
            while True:
                kind, item = await self.mailbox.get()
                if kind == QUOTE:
                    where = "on_quote"
                    self.stats.quotes += 1
                    if aq:
                        await on_quote(item)
                    else:
                        on_quote(item)
                elif kind == BAR:
                    where = "on_bar"
                    self.stats.bars += 1
                    self.context.bar_closed(item)
                    if not wants_bars:
                        pass
                    elif ab:
                        await on_bar(item)
                    else:
                        on_bar(item)
                else:
                    where = callback_for(item)
                    await _call(getattr(s, where), self._async[where], item)
                n += 1
                if n % 512 == 0:
                    # A busy strategy still yields, so the feed and others keep their turn.
                    await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self.stop()
            raise
        except Exception as exc:
            self._fail(where, exc)
            self.mailbox.close()

    async def stop(self) -> None:
        if self.stats.stopped or self.stats.error:
            return
        self.stats.stopped = True
        self.mailbox.close()
        try:
            with trio.move_on_after(5):
                await _call(self.strategy.on_stop, self._async["on_stop"])
        except Exception as exc:
            self._fail("on_stop", exc)


def make_runner(strategy: Strategy, *, symbols: list[str], timeframe: int, bars: dict,
                quotes: dict, clock: Clock, router: OrderRouter, capacity: int = 1024
                ) -> StrategyRunner:
    """Build a runner whose context reads the feed's bars and quotes in place."""
    ctx = Context(symbols=symbols, timeframe=timeframe, bars=bars, quotes=quotes, clock=clock,
                  router=router, strategy_name=strategy.name)
    ctx.lot_sizes = dict(type(strategy).lot_sizes)
    return StrategyRunner(strategy=strategy, context=ctx, mailbox=Mailbox(capacity))
