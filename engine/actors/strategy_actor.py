"""The strategy actor: one user strategy in its own process, fed by the feed daemon's lane.

`run_strategy` loads the strategy file in this process, attaches the feed daemon's OHLCV arrays
read-only by token (the strategy's `ctx.ohlcv()` reads them in place: bars never travel, only
the symbol of a closed bar does), and drives an ordinary `StrategyRunner` from the daemon's quote
batches (a shared-memory ring and a doorbell, `engine.actors.ring`, or the tractor stream with
`lane` off): the task that wakes on a batch calls a waiting strategy's on_quote itself. Orders go to the clearing actor through `ActorRouter`; the strategy sizes them against
its own book on the account (`engine.books.BookRouter`), kept here from its own orders and the
events the clearing actor sends back, exactly as in one process. The root sees a `started`
message, periodic counters on the context's stream, and the final report as its result.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from contextlib import AsyncExitStack
from typing import Any

import trio

from engine.actors._runtime import LINK_ERRORS, guard_child, tractor
from engine.actors.clearing_actor import OrderFlow, open_order_link
from engine.actors.cpus import pin_this_process
from engine.actors.daemon import FeedGone, Subscription, open_subscription
from engine.actors.logs import configure_child_logging
from engine.actors.messages import BAR, QUOTE, events_from, feed_event_from
from engine.books import BookRouter
from engine.clock import LiveClock
from engine.orders import CancelOrder, ModifyOrder, SubmitOrder
from engine.scheduler import StrategyRunner, make_runner
from engine.shm import ShmArray
from engine.strategy import StrategyError, load_strategy
from engine.ui._actors import ActorRows
from engine.warming import probe_warmup

__all__ = ["run_strategy", "warmup_of", "ActorRouter"]

log = logging.getLogger("engine.actors.strategy")


class ActorRouter:
    """The link of a strategy actor to the clearing actor: commands queue here for the order
    stream. The strategy's `BookRouter` wraps it."""

    def __init__(self) -> None:
        self._send, self.commands = trio.open_memory_channel(math.inf)

    def submit(self, order: SubmitOrder) -> None:
        self._send.send_nowait(order.model_dump())

    def cancel(self, command: CancelOrder) -> None:
        self._send.send_nowait(command.model_dump())

    def modify(self, command: ModifyOrder) -> None:
        self._send.send_nowait(command.model_dump())


def _report(runner: StrategyRunner | None, router: BookRouter | None, error: str | None,
            name: str) -> dict[str, Any]:
    stats = runner.stats if runner else None
    return {"name": name, "pid": os.getpid(),
            "quotes": stats.quotes if stats else 0, "bars": stats.bars if stats else 0,
            "coalesced": runner.mailbox.coalesced if runner else 0,
            "orders": [o.model_dump() for o in router.orders] if router else [],
            "positions": router.book.positions() if router else {},
            "error": (stats.error if stats and stats.error else None) or error}


@tractor.context
async def run_strategy(ctx: Any, path: str, params: dict[str, Any], feed: str, clearing: str,
                       account: str, symbols: list[str], timeframe: int, mailbox: int = 1024,
                       stats_every: float = 1.0, log_level: str = "info",
                       lane: bool = False, name: str | None = None,
                       cpus: list[int] | None = None) -> dict[str, Any]:
    """Run the strategy in `path` until the caller sends "stop", the strategy fails, or the
    feed goes away; return its report (counters, orders, error with its own traceback lines).

    `started` carries the pid, the strategy's name and the shm segments it attached, or
    `{"error": ...}` when the file or its parameters are wrong. With `lane`, quotes come through
    a shared-memory ring with a doorbell socket (`engine.actors.ring`) rather than the tractor
    stream. `name` is the strategy's name on the account when it is not its class name
    (`Name#2`). `cpus`: the CPUs to keep to (`engine.actors.cpus`).
    """
    configure_child_logging(log_level)
    pin_this_process(cpus, f"strategy {name or os.path.basename(path)}")
    async with trio.open_nursery() as guard:
        guard_child(guard)
        try:
            return await _run(ctx, path, params, feed, clearing, account, symbols, timeframe,
                              mailbox, stats_every, lane, name)
        finally:
            guard.cancel_scope.cancel()


async def _run(ctx: Any, path: str, params: dict[str, Any], feed: str, clearing: str,
               account: str, symbols: list[str], timeframe: int, mailbox: int,
               stats_every: float, lane: bool, name: str | None) -> dict[str, Any]:
    try:
        strategy = load_strategy(path)(**params)
    except StrategyError as exc:
        await ctx.started({"error": str(exc), "pid": os.getpid()})
        return _report(None, None, str(exc), name or os.path.basename(path))
    if name:
        strategy.name = name
    async with AsyncExitStack() as stack:
        sub = await stack.enter_async_context(open_subscription(feed, symbols, lane=lane))
        bars = {s: ShmArray.attach(token) for s, token in sub.tokens["bars"].items()
                if s in symbols}
        stack.callback(lambda: [shm.close() for shm in bars.values()])
        quotes: dict[str, dict] = dict(sub.quotes)
        flow = await stack.enter_async_context(open_order_link(clearing, account, strategy.name))
        link = ActorRouter()
        router = BookRouter(link, flow.book)
        runner, skip = _make_runner(strategy, sub, bars, quotes, router, symbols, timeframe,
                                    mailbox)
        runner.context.set_id_prefix(flow.prefix)
        rows = ActorRows()  # its log lines and indicators, for the run's dashboard
        stack.callback(rows.close)
        await ctx.started({"pid": os.getpid(), "name": strategy.name,
                           "segments": [shm.name for shm in bars.values()]})
        async with ctx.open_stream() as control:
            error = await _drive(runner, router, link, sub, flow, control, quotes, skip,
                                 stats_every, rows)
        return _report(runner, router, error, strategy.name)


async def warmup_of(path: str, params: dict[str, Any], symbols: list[str], timeframe: int,
                    name: str | None = None, log_level: str = "info") -> dict[str, Any]:
    """The closed bars of `timeframe` the strategy in `path` needs before it is called
    (`engine.warming.probe_warmup`: its `warmup`, or a dry on_start of it in this process), as
    the fields of a `WarmupNeed`; asked by the root before the feed backfills."""
    configure_child_logging(log_level)
    strategy = load_strategy(path)(**params)
    if name:
        strategy.name = name
    need = await probe_warmup(strategy, symbols=symbols, timeframe=timeframe, clock=LiveClock(),
                              threaded=True)
    return {"strategy": need.strategy, "bars": need.bars, "how": need.how, "note": need.note}


def _make_runner(strategy: Any, sub: Subscription, bars: dict[str, ShmArray],
                 quotes: dict[str, dict], router: BookRouter, symbols: list[str],
                 timeframe: int, mailbox: int) -> tuple[StrategyRunner, dict[str, int]]:
    """A runner whose context reads the attached bars, and per symbol how many of the bar
    events on their way announce bars its context already shows.

    The daemon read each array's `last_index` (absolute: rolls keep it) when it subscribed us; the context reads the bars it
    shows when it is built, a little later, while the daemon keeps writing. Bars closed in
    between are part of the strategy's starting history, so their events are skipped: the
    strategy never sees a bar before its on_bar, nor an on_bar for a bar it saw at start.
    """
    while True:
        before = {s: shm.last_index for s, shm in bars.items()}
        runner = make_runner(strategy, symbols=symbols, timeframe=timeframe, bars=bars,
                             quotes=quotes, clock=LiveClock(), router=router, capacity=mailbox)
        if all(shm.last_index == before[s] for s, shm in bars.items()):
            break  # no bar closed while the context read the bounds: `before` is what it saw
    return runner, {s: max(0, before[s] - int(sub.visible.get(s, before[s]))) for s in bars}


async def _drive(runner: StrategyRunner, router: BookRouter, link: ActorRouter,
                 sub: Subscription, flow: OrderFlow, control: Any, quotes: dict[str, dict],
                 skip: dict[str, int], stats_every: float, rows: ActorRows) -> str | None:
    """Run the strategy and its four pumps; return why it stopped if not by request."""
    why: list[str] = []
    async with trio.open_nursery() as nursery:
        done = nursery.cancel_scope.cancel

        async def follow_feed() -> None:
            deliver = runner.deliver
            try:
                while True:
                    for kind, payload in await sub.receive():
                        if kind == QUOTE:
                            quotes[payload["symbol"]] = payload
                            deliver([payload], [])
                        elif kind == BAR:
                            if skip.get(payload):
                                skip[payload] -= 1  # already in the history it started with
                                continue
                            deliver([], [payload])
                        else:
                            deliver([], [], [feed_event_from(payload)])
            except FeedGone as exc:
                why.append(str(exc))
            done()

        async def send_orders() -> None:
            async for command in link.commands:
                await flow.stream.send(command)

        async def take_events() -> None:
            hear = router.listen(runner.deliver_events)
            try:
                async for msg in flow.stream:
                    events = events_from(msg.get("events") or [])
                    if events:
                        hear(events)
            except LINK_ERRORS as exc:
                why.append(f"lost the clearing actor ({type(exc).__name__})")
            else:
                why.append("the clearing actor closed the order flow")
            done()

        async def listen() -> None:
            try:
                async for msg in control:
                    if msg == "stop":
                        break
            except LINK_ERRORS:
                pass
            done()

        async def send_stats() -> None:
            await control.send({"quotes": runner.stats.quotes, "bars": runner.stats.bars,
                                "coalesced": runner.mailbox.coalesced,
                                "orders": len(router.orders),
                                "positions": router.book.positions(), **rows.take(runner)})

        async def report() -> None:
            try:
                while True:
                    await trio.sleep(stats_every)
                    await send_stats()
            except LINK_ERRORS:
                done()

        async def strategy() -> None:
            await runner.run()
            with contextlib.suppress(*LINK_ERRORS):
                await send_stats()  # its last log lines, for the dashboard
            done()  # the strategy failed (its error is in runner.stats) or stopped

        for task in (follow_feed, send_orders, take_events, listen, report, strategy):
            nursery.start_soon(task)
    # Cancelling the runner ran its on_stop (unless it had failed).
    return why[0] if why else None
