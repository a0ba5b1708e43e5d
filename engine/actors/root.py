"""Actor runs: `engine run --actors a.py b.py`, the live engine as a tree of tractor actors.

The root (the calling process) looks the feed daemon for the run's provider, symbols, timeframe
and options up in tractor's registry and shares it, or starts it; starts the clearing actor and
one supervised actor per strategy; shows status; and on the duration, Ctrl-C or SIGTERM stops
the strategies (each runs on_stop), then the clearing actor, then the feed it started, leaving no
process or shared-memory segment behind. The root never runs strategy code.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from engine.actors._runtime import (
    LINK_ERRORS,
    child_process,
    describe_exit,
    open_peer,
    parse_hostport,
    reap_children,
    tractor,
    tractor_loglevel,
)
from engine.actors.clearing_actor import serve_clearing
from engine.actors.cpus import CpuPlan, plan_cpus
from engine.actors.cpus import describe as describe_cpus
from engine.actors.daemon import SILENCE, serve_feed, watch_feed
from engine.actors.plan import ActorRunResult, ClearingError, Plan, accounts_for, plan_run
from engine.actors.strategy_actor import warmup_of
from engine.actors.supervise import (
    Backoff,
    StrategySlot,
    remote_error_text,
    spawn_strategy_actor,
    supervise_strategy,
)
from engine.clock import LiveClock
from engine.feed import FeedError
from engine.feed_history import HistoryLoad
from engine.live import DEFAULT_HISTORY, StatusSnapshot, StrategyReport
from engine.orders import SubmitOrder
from engine.provider import DEFAULT_PROVIDER
from engine.ui._actors import heard, start_actor_board
from engine.warming import WarmupNeed

__all__ = ["run_actors", "run", "ActorRunResult", "ClearingError", "Plan", "plan_run"]

log = logging.getLogger("engine.actors")


class _Root:
    board: Any = None  # an engine.ui.RunBoard: the run's dashboard board

    def __init__(self, plan: Plan, *, history: int | None, paper: Any, restart: bool,
                 backoff: Backoff | None, registry: tuple[str, int], mailbox: int,
                 duration: float | None, status: Callable[[StatusSnapshot], None] | None,
                 status_every: float, handle_signals: bool,
                 on_event: Callable[[dict], None] | None, log_level: str,
                 stop_timeout: float, lanes: bool, cpus: CpuPlan) -> None:
        self.plan = plan
        self.history = DEFAULT_HISTORY if history is None else history
        self.warmup: list[WarmupNeed] = []
        self.loaded: dict[str, HistoryLoad] = {}
        self.account, self.accounts = accounts_for(paper)
        self.restart = restart
        self.backoff = backoff
        self.registry = registry
        self.mailbox = mailbox
        self.duration = duration
        self.status = status
        self.status_every = status_every
        self.handle_signals = handle_signals
        self.on_event = on_event
        self.log_level = log_level
        self.stop_timeout = stop_timeout
        self.lanes = lanes
        self.cpus = cpus
        self.watch_every = min(0.5, status_every)
        self.done = trio.Event()
        self.stopping = False
        self.interrupted = False
        self.problems: list[str] = []
        self.shared = False
        self.feed_info: dict[str, Any] = {}
        self.stats0: dict[str, Any] | None = None
        self.stats: dict[str, Any] = {}
        self.fresh = trio.Event()
        self.watch_stream: Any = None
        self.results: dict[str, Any] = {}
        self.finished = {"clearing actor": trio.Event(), "feed daemon": trio.Event()}
        self.holding: set[str] = set()
        self.supervisors_left = len(plan.slots)
        self.all_stopped = trio.Event()
        self.startup = trio.CancelScope()  # a first Ctrl-C during start-up cancels it
        self.clearing_name = f"clearing.{os.getpid()}"

    # -- reporting -----------------------------------------------------------------------------

    def notify(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        heard(self.board, event)
        if kind == "strategy_failed":
            again = (f"; restarting in {event['restart_in']:.1f} s"
                     if event.get("restart_in") is not None else "")
            log.error("strategy %s failed%s:\n%s", event["strategy"], again, event["error"])
        elif kind == "strategy_started":
            log.info("strategy %s running in actor pid %d%s", event["strategy"], event["pid"],
                     f" (life {event['life']})" if event["life"] > 1 else "")
        elif kind == "feed":
            log.info("%s feed daemon %s (pid %s)", "sharing the running" if event["shared"]
                     else "started", event["name"], event["pid"])
        if self.on_event is not None:
            self.on_event(event)

    def problem(self, text: str) -> None:
        if not self.stopping:
            log.error("%s", text)
            self.problems.append(text)
        self.done.set()

    # -- holding contexts open -----------------------------------------------------------------

    async def _hold(self, portal: Any, fn: Any, kwargs: dict[str, Any], stop: trio.Event,
                    what: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a context with an actor open until `stop`, then send "stop" and keep its result."""
        started = False
        self.holding.add(what)
        try:
            async with portal.open_context(fn, **kwargs) as (ctx, first):
                if "error" in first:
                    task_status.started(first)
                    return
                async with ctx.open_stream() as stream:
                    task_status.started(first)
                    started = True
                    async with trio.open_nursery() as nursery:

                        async def drain() -> None:
                            async for _ in stream:
                                pass
                            nursery.cancel_scope.cancel()

                        nursery.start_soon(drain)
                        await stop.wait()
                        await stream.send("stop")
                self.results[what] = await ctx.result()
        except LINK_ERRORS as exc:
            if not started:
                raise
            self.problem(f"the {what} failed: {remote_error_text(exc)}")
        finally:
            self.finished[what].set()

    async def _watch_feed(self, portal: Any, task_status: Any = trio.TASK_STATUS_IGNORED
                          ) -> None:
        started = False
        try:
            async with portal.open_context(watch_feed, every=self.watch_every) as (ctx, info):
                async with ctx.open_stream() as stream:
                    self.watch_stream = stream
                    task_status.started(info)
                    started = True
                    silence = max(SILENCE, 4 * self.watch_every)
                    while True:
                        with trio.move_on_after(silence) as quiet:
                            msg = await stream.receive()
                        if quiet.cancelled_caught:
                            self.problem(f"the feed daemon {self.plan.feed_name} went silent")
                            return
                        self.stats = msg
                        if self.stats0 is None:
                            self.stats0 = msg
                        self.fresh.set()
        except (*LINK_ERRORS, trio.EndOfChannel) as exc:
            if not started:
                raise
            self.problem(f"the feed daemon {self.plan.feed_name} stopped "
                         f"({remote_error_text(exc)})")
        finally:
            self.watch_stream = None

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> ActorRunResult:
        clock = LiveClock()
        async with tractor.open_nursery(arbiter_addr=self.registry, name=f"engine.run.{os.getpid()}",
                                        loglevel=tractor_loglevel()) as an:
            result = await self._run_tree(an, clock)
            await an.cancel()
            await reap_children(an)
        return result

    async def _run_tree(self, an: Any, clock: LiveClock) -> ActorRunResult:
        plan = self.plan
        name = plan.feed_name
        feed_stop, clearing_stop = trio.Event(), trio.Event()
        seconds = 0.0
        async with open_peer(name) as found, trio.open_nursery() as tasks:
            if self.handle_signals and threading.current_thread() is threading.main_thread():
                await tasks.start(self._watch_signals)
            self.shared = found is not None
            portals: dict[str, Any] = {}
            with self.startup:
                await self._spawn(an, portals)
                portal = found or portals["feed"]
                if self.history:
                    await self._find_warmups(portals)
                if found is None:
                    info = await tasks.start(self._hold, portal, serve_feed, {
                        "provider": plan.provider, "symbols": plan.symbols,
                        "timeframe": plan.timeframe, "history": self.history,
                        "warmup": max((w.bars for w in self.warmup), default=0),
                        "options": plan.options, "log_level": self.log_level,
                        "cpus": _listed(self.cpus.feed)}, feed_stop,
                        "feed daemon")
                    if "error" in info:
                        raise FeedError(info["error"])
                    self._watch_process(tasks, an, portal, "feed daemon")
                self.feed_info = await tasks.start(self._watch_feed, portal)
                self._note_history()
                self.notify({"event": "feed", "name": name, "pid": self.feed_info["pid"],
                             "shared": self.shared, "tokens": self.feed_info["tokens"]})
                start_actor_board(self.board, self, clock, tasks)
                info = await tasks.start(self._hold, portals["clearing"], serve_clearing, {
                    "feed": name, "symbols": plan.symbols, "accounts": self.accounts,
                    "log_level": self.log_level, "lane": self.lanes}, clearing_stop,
                    "clearing actor")
                if "error" in info:
                    raise ClearingError(info["error"])
                self._watch_process(tasks, an, portals["clearing"], "clearing actor")
            if not self.done.is_set():
                async with trio.open_nursery() as supervisors:
                    for slot in plan.slots:
                        supervisors.start_soon(self._supervise, an, slot, portals.get(slot.name))
                    await self._wait_ready()
                    # The duration counts from the moment every strategy runs (or failed).
                    t0 = clock.now()
                    if self.status is not None:
                        tasks.start_soon(self._report_status, clock, t0)
                    await self._wait_duration()
                    seconds = clock.now() - t0
                    await self._stop_strategies(supervisors)
            self.stopping = True
            await self._final_stats()
            for stop, what in ((clearing_stop, "clearing actor"), (feed_stop, "feed daemon")):
                stop.set()
                if what in self.holding:
                    with trio.move_on_after(0.5):
                        await self.finished[what].wait()
            tasks.cancel_scope.cancel()
        return self._result(seconds)

    async def _find_warmups(self, portals: dict[str, Any]) -> None:
        """Each strategy's warm-up, found in its own actor (the root runs no strategy code)
        before the feed backfills."""
        needs: dict[str, WarmupNeed] = {}

        async def ask(slot: StrategySlot) -> None:
            try:
                found = await portals[slot.name].run(
                    warmup_of, path=slot.path, params=slot.params, symbols=slot.symbols,
                    timeframe=self.plan.timeframe, name=slot.name, log_level=self.log_level)
                needs[slot.name] = WarmupNeed(**found)
            except Exception as exc:  # noqa: BLE001 - its own start reports the failure
                needs[slot.name] = WarmupNeed(slot.name, 0, "none",
                                              f"not found: {remote_error_text(exc)}")

        async with trio.open_nursery() as nursery:
            for slot in self.plan.slots:
                nursery.start_soon(ask, slot)
        self.warmup = [needs[slot.name] for slot in self.plan.slots]
        for w in self.warmup:
            log.info("warm-up of %s", w.describe())

    def _note_history(self) -> None:
        """What the feed's backfill gave (a shared daemon's was loaded for the run that started
        it: a strategy needing more waits for live bars, as the runner's gate has it)."""
        self.loaded = {s: HistoryLoad(**h)
                       for s, h in (self.feed_info.get("history") or {}).items()}
        for load in self.loaded.values():
            log.info("history loaded: %s", load.describe(self.plan.timeframe))
        if self.shared:
            for w in self.warmup:
                short = [h for h in self.loaded.values() if h.bars < w.bars]
                if short:
                    log.warning("the shared feed daemon loaded %s; %s needs %d bars: it is "
                                "called once live bars complete them", ", ".join(
                                    h.describe(self.plan.timeframe) for h in short),
                                w.strategy, w.bars)

    async def _spawn(self, an: Any, portals: dict[str, Any]) -> None:
        """Start every process the run needs at once, so their imports overlap."""

        async def spawn(key: str, name: str, module: str) -> None:
            portals[key] = await an.start_actor(name, enable_modules=[module])

        async def strategy(slot: StrategySlot) -> None:
            portals[slot.name] = await spawn_strategy_actor(an, slot, 1)

        async with trio.open_nursery() as nursery:
            if not self.shared:
                nursery.start_soon(spawn, "feed", self.plan.feed_name, "engine.actors.daemon")
            nursery.start_soon(spawn, "clearing", self.clearing_name,
                               "engine.actors.clearing_actor")
            for slot in self.plan.slots:
                nursery.start_soon(strategy, slot)

    def _watch_process(self, tasks: trio.Nursery, an: Any, portal: Any, what: str) -> None:
        proc = child_process(an, portal)
        if proc is None:
            return

        async def watch() -> None:
            code = await proc.wait()
            self.problem(f"the {what} (pid {proc.pid}) {describe_exit(code)}")

        tasks.start_soon(watch)

    async def _wait_ready(self) -> None:
        async with trio.open_nursery() as nursery:

            async def all_ready() -> None:
                for slot in self.plan.slots:
                    await slot.ready.wait()
                nursery.cancel_scope.cancel()

            async def until_done() -> None:
                await self.done.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(all_ready)
            nursery.start_soon(until_done)

    async def _supervise(self, an: Any, slot: StrategySlot, portal: Any) -> None:
        kwargs = {"path": slot.path, "params": slot.params, "feed": self.plan.feed_name,
                  "clearing": self.clearing_name, "account": self.account,
                  "symbols": slot.symbols, "timeframe": self.plan.timeframe,
                  "mailbox": self.mailbox, "stats_every": min(1.0, self.status_every),
                  "log_level": self.log_level, "lane": self.lanes, "name": slot.name,
                  "cpus": _listed(self.cpus.strategies)}
        try:
            await supervise_strategy(an, slot, kwargs, restart=self.restart,
                                     backoff=self.backoff or Backoff(), notify=self.notify,
                                     portal=portal)
        finally:
            self.supervisors_left -= 1
            if self.supervisors_left == 0:
                self.all_stopped.set()
                self.done.set()

    async def _watch_signals(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for _ in signals:
                if self.interrupted:
                    raise KeyboardInterrupt  # a second Ctrl-C: tear down without waiting
                self.interrupted = True
                self.done.set()
                self.startup.cancel()

    async def _wait_duration(self) -> None:
        with trio.move_on_after(math.inf if self.duration is None else self.duration):
            await self.done.wait()

    async def _stop_strategies(self, supervisors: trio.Nursery) -> None:
        for slot in self.plan.slots:
            slot.stop_requested = True
            slot.stop_event.set()
        async with trio.open_nursery() as nursery:
            for slot in self.plan.slots:
                if slot.control is not None:
                    nursery.start_soon(self._send_stop, slot)
        with trio.move_on_after(self.stop_timeout) as late:
            await self.all_stopped.wait()
        if late.cancelled_caught:
            for slot in self.plan.slots:
                if slot.state in ("starting", "running"):
                    slot.error = (f"did not stop within {self.stop_timeout:g} s; its actor "
                                  "was cancelled")
            supervisors.cancel_scope.cancel()

    @staticmethod
    async def _send_stop(slot: StrategySlot) -> None:
        try:
            await slot.control.send("stop")
        except (*LINK_ERRORS, AttributeError):
            pass

    async def _final_stats(self) -> None:
        stream = self.watch_stream
        if stream is None:
            return
        self.fresh = trio.Event()
        with trio.move_on_after(0.3):
            try:
                await stream.send("now")
            except LINK_ERRORS:
                return
            await self.fresh.wait()

    async def _report_status(self, clock: LiveClock, t0: float) -> None:
        last_quotes, last_t = int(self.stats.get("quotes", 0)), clock.now()
        while True:
            await trio.sleep(self.status_every)
            now = clock.now()
            stats = self.stats
            quotes = int(stats.get("quotes", 0))
            rate = (quotes - last_quotes) / max(now - last_t, 1e-9)
            last_quotes, last_t = quotes, now
            per = [slot.stats() for slot in self.plan.slots]
            self.status(StatusSnapshot(
                seconds=now - t0, quotes_per_s=rate, quotes=quotes,
                bars=int(stats.get("bars", 0)), last_prices=dict(stats.get("last", {})),
                orders=sum(p["orders"] for p in per), coalesced=sum(p["coalesced"] for p in per),
                errors=sum(1 for slot in self.plan.slots if slot.state == "failed"),
                extra={"restarts": sum(max(0, slot.lives - 1) for slot in self.plan.slots)}))

    def _result(self, seconds: float) -> ActorRunResult:
        plan = self.plan
        end, start = self.stats, self.stats0 or {}

        def delta(key: str) -> int:
            return int(end.get(key, 0)) - int(start.get(key, 0))

        reports, orders = [], []
        for slot in plan.slots:
            st = slot.stats()
            reports.append(StrategyReport(slot.name, st["quotes"], st["bars"], st["coalesced"],
                                          st["orders"], slot.error,
                                          positions=dict(slot.positions)))
            orders.extend(SubmitOrder.model_validate(o) for o in slot.orders)
        clearing = self.results.get("clearing actor") or {}
        return ActorRunResult(
            provider=plan.provider, symbols=plan.symbols, timeframe=plan.timeframe,
            seconds=seconds, quotes=delta("quotes"), ticks=delta("ticks"), bars=delta("bars"),
            rejected=delta("rejected"), late_ticks=delta("late_ticks"), strategies=reports,
            orders=orders, last_prices={s: float(end.get("last", {}).get(s, math.nan))
                                        for s in plan.symbols},
            interrupted=self.interrupted, account=clearing.get(self.account),
            feed=plan.feed_name, feed_pid=self.feed_info.get("pid"), shared_feed=self.shared,
            cpus=describe_cpus(self.cpus, shared_feed=self.shared),
            restarts={slot.name: max(0, slot.lives - 1) for slot in plan.slots},
            failures={slot.name: list(slot.failures) for slot in plan.slots},
            problems=list(self.problems), warmup=list(self.warmup), history=dict(self.loaded))


def _listed(cpus: tuple[int, ...] | None) -> list[int] | None:
    return list(cpus) if cpus else None


async def run_actors(
    strategies: Sequence[str | Path],
    *,
    provider: str = DEFAULT_PROVIDER,
    provider_options: dict[str, Any] | None = None,
    symbols: Sequence[str] | None = None,
    timeframe: int | str | None = None,
    params: dict[str, Any] | None = None,
    duration: float | None = None,
    history: int | None = None,
    paper: Any = None,
    restart: bool = False,
    backoff: Backoff | None = None,
    registry: str | tuple[str, int] | None = None,
    mailbox: int = 1024,
    status: Callable[[StatusSnapshot], None] | None = None,
    status_every: float = 1.0,
    handle_signals: bool = False,
    on_event: Callable[[dict], None] | None = None,
    stop: trio.Event | None = None,
    log_level: str = "info",
    stop_timeout: float = 1.0,
    lanes: bool = True,
    pin_cpus: bool = True,
    board: Any = None,
) -> ActorRunResult:
    """Run strategy files each in its own actor on one shared feed daemon until `duration`
    seconds pass, every strategy has stopped, or (with `handle_signals`) Ctrl-C / SIGTERM.

    `registry` is tractor's registry address (`HOST:PORT`, default 127.0.0.1:1616): a feed
    daemon registered there for the same provider, symbols, timeframe and options is shared.
    `restart` restarts a failed strategy actor after `backoff` (default 0.5 s doubling to 30 s).
    `paper` and `history` are as for `engine.run`: the feed backfills the most any strategy's
    warm-up needs (each found in its own actor) on top of `history` frames (None: 10).
    `on_event` hears each actor event as a dict (feed,
    strategy_started, strategy_stats, strategy_failed, strategy_stopped); setting `stop` stops
    the run as Ctrl-C does. `stop_timeout` (seconds) bounds each strategy's on_stop.
    `lanes` (the default) hands quote batches to the actors through a shared-memory ring per
    actor with a doorbell socket, paired through their tractor contexts, which still own each
    lane's lifetime (`engine.actors.ring`); `lanes=False` sends them over the tractor streams
    themselves, at several times the latency. `pin_cpus` (the default) keeps the feed daemon
    on a CPU of its own and the strategy actors on the others, when there are two or more
    (`engine.actors.cpus`); False leaves placement to the OS.
    `board` (an `engine.ui.RunBoard`) publishes the run for its dashboard.
    """
    plan = plan_run(strategies, provider=provider, provider_options=provider_options,
                    symbols=symbols, timeframe=timeframe, params=params)
    root = _Root(plan, history=history, paper=paper, restart=restart, backoff=backoff,
                 registry=parse_hostport(registry), mailbox=mailbox, duration=duration,
                 status=status, status_every=status_every, handle_signals=handle_signals,
                 on_event=on_event, log_level=log_level, stop_timeout=stop_timeout,
                 lanes=lanes, cpus=plan_cpus() if pin_cpus else CpuPlan())
    root.board = board  # closed by its rows task, which ends with the run
    if stop is None:
        return await root.run()
    async with trio.open_nursery() as nursery:

        async def stop_on_request() -> None:
            await stop.wait()
            root.done.set()
            root.startup.cancel()

        nursery.start_soon(stop_on_request)
        result = await root.run()
        nursery.cancel_scope.cancel()
    return result


def run(strategies: Sequence[str | Path], **kwargs: Any) -> ActorRunResult:
    """`run_actors` from synchronous code (a script or notebook): see its arguments."""
    return trio.run(lambda: run_actors(strategies, **kwargs))
