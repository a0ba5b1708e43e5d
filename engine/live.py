"""Live and paper runs: `engine.run(strategy)` streams a provider into strategies until told to stop.

This is the public function behind `engine run`; it returns a `RunResult` a notebook can
inspect. It opens the feed, starts one runner per strategy, shows status through a callback, and
on the duration, Ctrl-C or SIGTERM stops the strategies (on_stop runs), then the feed, leaving no
task, process or shared-memory segment behind.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from engine.books import distinct_names, open_book
from engine.clock import Clock, LiveClock
from engine.feed import Feed, open_feed
from engine.feed_history import HistoryLoad
from engine.orders import SubmitOrder
from engine.provider import DEFAULT_PROVIDER, Provider, load_provider
from engine.sampler import format_timeframe, parse_timeframe
from engine.scheduler import StrategyRunner, make_runner
from engine.strategy import IntentLog, OrderRouter, Strategy, StrategyError, load_strategy
from engine.timefmt import iso
from engine.warming import WarmupNeed, probe_warmup
from engine.watchdog import DEFAULT_BUDGET, Watchdog

__all__ = ["run", "run_live", "RunResult", "StatusSnapshot"]

log = logging.getLogger("engine.live")

# Frames of history a run backfills per symbol at least, when not told (`history=None`).
DEFAULT_HISTORY = 10


@dataclass
class StrategyReport:
    name: str
    quotes: int
    bars: int
    coalesced: int
    orders: int
    error: str | None
    off_loop: str | None = None  # why its callbacks ran in its own thread, if they did
    off_loop_since: float | None = None  # epoch seconds
    held: float = 0.0  # seconds its longest callback held the event loop, once one overran
    held_by: str | None = None  # that callback
    slowest: float = 0.0  # seconds, its longest finished callback in its thread
    lag: float = 0.0  # seconds, the longest an event waited for it once in its thread
    behind: float = 0.0  # seconds its oldest waiting event had waited when the run stopped
    stuck: str | None = None  # its callback still running in its thread when the run ended
    positions: dict[str, float] = field(default_factory=dict)  # its own, on the account

    def slow_line(self) -> str | None:
        """How slow it was, for a strategy that ran in its thread or held the loop; else None."""
        if self.off_loop is None:
            if self.held_by is None:
                return None
            return f"{self.held_by} held the event loop for {self.held:.2f} s"
        stuck = f"; {self.stuck} still running when the run ended" if self.stuck else ""
        return (f"callbacks in its own thread since {iso(self.off_loop_since)} "
                f"({self.off_loop}){stuck}; longest finished callback {self.slowest:.2f} s; "
                f"lag up to {self.lag:.2f} s, {self.behind:.2f} s behind at the end")


@dataclass
class RunResult:
    """What a run did: counts, last prices, orders and any strategy error."""

    provider: str
    symbols: list[str]
    timeframe: int
    seconds: float
    quotes: int
    ticks: int
    bars: int
    rejected: int
    late_ticks: int
    strategies: list[StrategyReport]
    orders: list[SubmitOrder]
    last_prices: dict[str, float]
    interrupted: bool = False
    account: dict[str, Any] | None = None  # the paper account at the end, with --paper
    warmup: list[WarmupNeed] = field(default_factory=list)  # each strategy's, found at start
    history: dict[str, HistoryLoad] = field(default_factory=dict)  # what each backfill gave

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.strategies if s.error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        lines = [
            f"ran {self.seconds:.1f} s on {self.provider} {','.join(self.symbols)} "
            f"{format_timeframe(self.timeframe)}{' (interrupted)' if self.interrupted else ''}",
            f"  feed: {self.quotes} quotes, {self.ticks} ticks, {self.bars} bars closed, "
            f"{self.rejected} bad quotes skipped, {self.late_ticks} late ticks",
            "  last: " + "  ".join(f"{s} {p:g}" for s, p in self.last_prices.items()),
        ]
        lines.extend(history_lines(self.warmup, self.history, self.timeframe))
        for s in self.strategies:
            state = "FAILED" if s.error else "ok"
            holds = "".join(f", holds {q:g} {sym}" for sym, q in s.positions.items())
            lines.append(f"  {s.name}: {state}; {s.quotes} quotes, {s.bars} bars, {s.orders} orders"
                         f", {s.coalesced} quotes coalesced while behind{holds}")
            slow = s.slow_line()
            if slow:
                lines.append(f"    slow: {slow}")
        if self.account is not None:
            a = self.account
            lines.append(f"  account {a['account']}: equity {a['equity']:,.2f}, cash "
                         f"{a['cash']:,.2f}, fees {a['fees']:,.2f}, {a['fills']} fills this run")
            for p in a["positions"]:
                lines.append(f"    {p['symbol']}: {p['quantity']:g} @ {p['avg_price']:g}, "
                             f"unrealized {p['unrealized']:,.2f}, realized {p['realized']:,.2f}")
        return "\n".join(lines)


@dataclass
class StatusSnapshot:
    """A moment of a running feed, for a live status line."""

    seconds: float
    quotes_per_s: float
    quotes: int
    bars: int
    last_prices: dict[str, float]
    orders: int
    coalesced: int
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        prices = " ".join(f"{s} {p:g}" for s, p in list(self.last_prices.items())[:4])
        return (f"{self.seconds:6.1f}s | {self.quotes_per_s:8.0f} quotes/s | {self.bars} bars | "
                f"{prices} | orders {self.orders}"
                + (f" | coalesced {self.coalesced}" if self.coalesced else "")
                + (f" | FAILED {self.errors}" if self.errors else ""))


def history_lines(warmup: Sequence[WarmupNeed], history: dict[str, HistoryLoad],
                  timeframe: int) -> list[str]:
    """The summary's lines on warm-up: what each strategy needs and what each symbol loaded."""
    lines = []
    if warmup:
        lines.append("  warm-up: " + "; ".join(w.describe() for w in warmup))
    if history:
        lines.append("  history: " + "; ".join(h.describe(timeframe) for h in history.values()))
    return lines


def _last_price(quote: dict | None) -> float:
    return float(quote.get("last") or 0.0) if quote else float("nan")


def _orders_of(router: OrderRouter) -> list[SubmitOrder]:
    return list(getattr(router, "orders", []))


def _paper_broker(paper: Any, symbols: list[str], clock: Clock) -> Any:
    """A PaperBroker from `paper`: a broker, an account name, or a dict of open_account args."""
    from engine.clearing.broker import PaperBroker, open_account

    if isinstance(paper, PaperBroker):
        return paper
    args = {"name": paper} if isinstance(paper, str) else dict(paper)
    return open_account(symbols=symbols, clock=clock, **args)


async def run_live(
    strategies: Sequence[Strategy],
    *,
    provider: Provider | str = DEFAULT_PROVIDER,
    symbols: Sequence[str],
    timeframe: int | str = 1,
    duration: float | None = None,
    history: int | None = None,
    clock: Clock | None = None,
    router: OrderRouter | None = None,
    mailbox: int = 1024,
    status: Callable[[StatusSnapshot], None] | None = None,
    status_every: float = 1.0,
    handle_signals: bool = False,
    on_feed: Callable[[Feed], None] | None = None,
    callback_budget: float = DEFAULT_BUDGET,
    board: Any = None,
) -> RunResult:
    """Stream `symbols` from `provider` into `strategies` until `duration` clock seconds pass,
    every strategy has stopped, or (with `handle_signals`) Ctrl-C / SIGTERM arrives.

    The strategies share `router` (one account); each one's `ctx.position` and `ctx.target`
    count only its own orders and fills (`engine.books`), and two of one class trade as
    `Name` and `Name#2`. A synchronous callback that holds the event loop longer than `callback_budget` seconds
    moves its strategy's callbacks to a worker thread of its own (engine.watchdog).

    Before the feed opens, each strategy's warm-up is found (engine.warming: its `warmup`, or
    its indicators from a dry on_start of a copy) and the feed backfills at least that many
    closed bars of `timeframe` per symbol, paging the provider's history, on top of `history`
    frames (None: 10). A strategy is not called for a symbol before it has its warm-up's bars
    there; when the provider has too little history, live bars complete it. `history=0`
    backfills nothing: the strategies warm up on live bars alone. `board` (an
    `engine.ui.RunBoard`) publishes the run to its dashboard process."""
    period = parse_timeframe(timeframe)
    clock = clock or LiveClock()
    router = router or IntentLog()
    provider = load_provider(provider) if isinstance(provider, str) else provider
    symbols = list(symbols)
    interrupted = False
    runners: list[StrategyRunner] = []
    books = []
    name_strategies(strategies)
    main = handle_signals and threading.current_thread() is threading.main_thread()
    needs = [await probe_warmup(s, symbols=symbols, timeframe=period, clock=clock,
                                threaded=main)
             for s in strategies]
    frames = DEFAULT_HISTORY if history is None else history
    need = max((w.bars for w in needs), default=0) if frames else 0
    for w in needs:
        log.info("warm-up of %s", w.describe())
    async with open_feed(provider, symbols, timeframe=period, history=frames, warmup=need,
                         clock=clock) as feed:
        for load in feed.history.values():
            log.info("history loaded: %s", load.describe(period))
        # A callback stuck on the loop can only be escaped by ending the process (in the main
        # thread, with signals handled: the CLI's run); the feed's segments are unlinked first.
        watchdog = Watchdog(callback_budget, hard_exit=main,
                            cleanup=lambda: _unlink(feed, board))
        if on_feed is not None:
            on_feed(feed)
        t0 = clock.now()
        watchdog.stop_after(duration)
        for strat in strategies:
            # Each strategy sizes its orders against its own share of the account.
            own, prefix = open_book(router, strat.name, clock.now())
            runner = make_runner(strat, symbols=symbols, timeframe=period, bars=feed.bars,
                                 quotes=feed.quotes, clock=clock, router=own, capacity=mailbox,
                                 watchdog=watchdog)
            runner.context.set_id_prefix(prefix)
            feed.subscribe(runner.queue, runner.flush)
            if hasattr(router, "attach"):
                router.attach(strat.name, own.listen(runner.deliver_events))
            runners.append(runner)
            books.append(own.book)
        if hasattr(router, "on_batch"):
            # After the strategies: a quote reaches them before the fills it causes.
            for quote in feed.quotes.values():
                router.on_batch([quote], [], [])
            feed.subscribe(router.on_batch)
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def supervise(runner: StrategyRunner) -> None:
                await runner.run()
                feed.unsubscribe(runner.queue)
                if all(r.stats.error or r.stats.stopped for r in runners):
                    done.set()

            watchdog.start()
            nursery.start_soon(watchdog.watch)
            if hasattr(router, "run"):
                nursery.start_soon(router.run)
            if board is not None:
                board.attach(feed)  # its rows task removes it again, however the run ends
                nursery.start_soon(board.run, feed, runners)
            for runner in runners:
                nursery.start_soon(supervise, runner)
            if status is not None:
                nursery.start_soon(_report_status, feed, runners, router, clock, t0, status,
                                   status_every)
            if main:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    def stop_by_signal() -> None:
                        nonlocal interrupted
                        interrupted = True
                        done.set()

                    token = trio.lowlevel.current_trio_token()
                    watchdog.chain_signals(lambda: token.run_sync_soon(stop_by_signal),
                                           signal.SIGINT, signal.SIGTERM)

                    async def watch_signals() -> None:
                        async for _ in signals:
                            if interrupted:
                                # Second Ctrl-C: a live broker cancels every working order.
                                kill = getattr(router, "kill_switch", None)
                                if kill is not None:
                                    await kill("second Ctrl-C")
                                raise KeyboardInterrupt
                            stop_by_signal()
                    nursery.start_soon(watch_signals)
                    await _wait_done(done, duration, clock)
            else:
                await _wait_done(done, duration, clock)
            async with trio.open_nursery() as stopping:
                for runner in runners:
                    if runner.off_loop:
                        # In its own thread: its wait for a stuck callback overlaps the others'.
                        stopping.start_soon(runner.stop)
                    else:
                        await runner.stop()
            nursery.cancel_scope.cancel()
        seconds = clock.now() - t0
        return RunResult(
            provider=provider.name, symbols=symbols, timeframe=period, seconds=seconds,
            quotes=feed.stats.quotes, ticks=feed.stats.ticks, bars=feed.stats.bars,
            rejected=feed.stats.rejected, late_ticks=feed.sampler.late_ticks,
            strategies=[_report(r, router, book) for r, book in zip(runners, books, strict=True)],
            orders=_orders_of(router),
            last_prices={s: _last_price(feed.quotes.get(s)) for s in symbols},
            interrupted=interrupted,
            account=(dict(router.summary(), fills=len(router.fills))
                     if hasattr(router, "summary") else None),
            warmup=needs, history=dict(feed.history),
        )


def name_strategies(strategies: Sequence[Strategy]) -> None:
    """Give strategies that share a name (two instances of one class) distinct names for the
    account they trade: `Name`, `Name#2`, ... in the order given."""
    for strat, name in zip(strategies, distinct_names([s.name for s in strategies]), strict=True):
        if strat.name == name:
            continue
        try:
            strat.name = name
        except AttributeError:
            raise StrategyError(f"two strategies are named {strat.name!r} and the name cannot "
                                "be set; give them distinct names") from None
        log.info("two strategies are named %s: this one trades as %s", type(strat).__name__,
                 name)
def _unlink(feed: Feed, board: Any = None) -> None:
    # From the watchdog thread, just before os._exit: names only; the stuck loop keeps its maps.
    for shm in (feed.ticks, *feed.bars.values()):
        shm.unlink()
    if board is not None:
        board.discard()


def _report(r: StrategyRunner, router: OrderRouter, book: Any) -> StrategyReport:
    st = r.stats
    return StrategyReport(r.name, st.quotes, st.bars, r.mailbox.coalesced,
                          sum(o.strategy == r.name for o in _orders_of(router)), st.error,
                          st.off_loop, st.off_loop_since, st.held, st.held_by, st.slowest,
                          st.lag, st.behind, st.stuck, positions=book.positions())


async def _wait_done(done: trio.Event, duration: float | None, clock: Clock) -> None:
    if duration is None:
        await done.wait()
        return
    with trio.move_on_after(duration):
        await done.wait()


async def _report_status(feed: Feed, runners: list[StrategyRunner], router: OrderRouter,
                         clock: Clock, t0: float, status: Callable[[StatusSnapshot], None],
                         every: float) -> None:
    last_quotes, last_t = feed.stats.quotes, clock.now()
    while True:
        await trio.sleep(every)
        now = clock.now()
        rate = (feed.stats.quotes - last_quotes) / max(now - last_t, 1e-9)
        last_quotes, last_t = feed.stats.quotes, now
        status(StatusSnapshot(
            seconds=now - t0, quotes_per_s=rate, quotes=feed.stats.quotes, bars=feed.stats.bars,
            last_prices={s: _last_price(q) for s, q in feed.quotes.items()},
            orders=len(_orders_of(router)), coalesced=sum(r.mailbox.coalesced for r in runners),
            errors=sum(1 for r in runners if r.stats.error),
        ))


def resolve_strategy(strategy: str | Path | type[Strategy] | Strategy,
                     params: dict[str, Any] | None = None) -> Strategy:
    """Turn a file path, a class or an instance into a strategy instance with `params` applied."""
    if isinstance(strategy, Strategy):
        if params:
            raise StrategyError("pass params to the class, not to an instance")
        return strategy
    cls = strategy if isinstance(strategy, type) else load_strategy(strategy)
    return cls(**(params or {}))


def run(
    strategy: str | Path | type[Strategy] | Strategy,
    *,
    provider: str | Provider = DEFAULT_PROVIDER,
    symbols: Sequence[str] | None = None,
    timeframe: int | str | None = None,
    duration: float | None = None,
    params: dict[str, Any] | None = None,
    provider_options: dict[str, Any] | None = None,
    history: int | None = None,
    status: Callable[[StatusSnapshot], None] | None = None,
    status_every: float = 1.0,
    handle_signals: bool = False,
    paper: Any = None,
    record: bool = False,
    live: Any = None,
    callback_budget: float = DEFAULT_BUDGET,
    spec: Any = None,
    ui: Any = None,
) -> RunResult:
    """Run a strategy live on `provider` (default: the simulated market) and return the result.

    `strategy` is a `.py` path, a Strategy subclass or an instance; `symbols` and `timeframe`
    default to the strategy's class attributes; `duration` is in seconds (None: until stopped).
    The feed backfills the strategy's warm-up (see `run_live`) and at least `history` frames
    of the provider's history (None: 10; 0: nothing, the strategy warms up on live bars).
    `paper` trades a paper account: an account name, or a dict of `open_account` arguments
    (`name`, `cash`, `config`, `path`); without it, orders are only logged. `record` stores every
    tick in the history store (engine.store) for tick-level replays. `live` (an
    engine.live_trading.LiveSettings) trades a real account at `provider`'s venue instead. A
    synchronous callback that holds the event loop over `callback_budget` seconds moves its
    strategy to a thread. `spec` (an `engine.RunSpec`, the description backtests read) gives
    the provider, symbols and timeframe its data names, and a paper account its cash, costs
    and leverage. `ui` serves the run's dashboard from a process of its own: an
    `engine.ui.RunBoard`, or `"[HOST:]PORT"` (127.0.0.1 and a random token by default); its URL
    is printed to stderr.
    """
    if spec is not None:
        provider = spec.data.provider or provider
        symbols = spec.data.symbols or symbols
        timeframe = spec.data.timeframe or timeframe
        if paper is not None and not hasattr(paper, "account"):
            args = {"name": paper} if isinstance(paper, str) else dict(paper)
            args.setdefault("cash", spec.account.cash)
            args.setdefault("config", spec.broker_config())
            args.setdefault("instruments", spec.account.instruments)
            paper = args
    strat = resolve_strategy(strategy, params)
    syms = list(symbols or type(strat).symbols or [])
    if not syms:
        raise StrategyError(f"{strat.name} declares no symbols; pass symbols=[...] (--symbols)")
    tf = timeframe or type(strat).timeframe
    parse_timeframe(tf)
    prov = load_provider(provider) if isinstance(provider, str) else provider
    prov.configure(**(provider_options or {}))

    board = None
    if ui is not None:
        from engine.ui import RunBoard, parse_address

        if isinstance(ui, RunBoard):
            board = ui
        else:
            host, port = parse_address(str(ui))
            board = RunBoard(host=host, port=port)

    async def main() -> RunResult:
        clock = LiveClock()
        if live is not None:
            from engine.live_trading import open_live_broker

            async with open_live_broker(prov, syms, clock, live) as broker:
                return await run_live([strat], provider=prov, symbols=syms, timeframe=tf,
                                      duration=duration, history=history, status=status,
                                      status_every=status_every, handle_signals=handle_signals,
                                      clock=clock, router=broker, board=board)
        router = _paper_broker(paper, syms, clock) if paper is not None else None
        if board is not None and router is not None:
            board.account = getattr(router.account, "name", None)
        recorder = None
        if record:
            from engine.store import TickRecorder

            recorder = TickRecorder(prov.name, syms)
        try:
            return await run_live([strat], provider=prov, symbols=syms, timeframe=tf,
                                  duration=duration, history=history, status=status,
                                  status_every=status_every, handle_signals=handle_signals,
                                  clock=clock, router=router, callback_budget=callback_budget,
                                  on_feed=recorder.attach if recorder else None,
                                  board=board)
        finally:
            if board is not None:
                board.close()
            if router is not None and router.ledger is not None:
                router.ledger.close()
            if recorder is not None:
                recorder.close()

    return trio.run(main)
