"""The pieces that keep a blocking strategy off the event loop: the stamped mailbox, the strategy's
own worker thread, the context it trades through, and the runner's watchdog."""

from __future__ import annotations

import threading

import pytest
import trio

from engine import LiveClock, Strategy
from engine.clock import ReplayClock
from engine.orders import SubmitOrder
from engine.scheduler import BAR, EVENT, QUOTE, Mailbox, StrategyRunner
from engine.strategy import Context, IntentLog
from engine.watchdog import Watchdog
from engine.worker import StrategyThread, ThreadContext

T0 = 1_700_000_000.0
WAIT = 60.0


def q(sym: str, seq: int) -> dict:
    return {"symbol": sym, "seq": seq}


async def test_a_stamped_mailbox_keeps_order_and_dates_each_item_by_its_arrival():
    clock = ReplayClock(100.0)
    box = Mailbox(capacity=3)
    box.put([q("a", 1)], [])
    box.stamp_with(clock.now)  # what already waits counts from now
    clock.advance(101.0)
    box.put([q("a", 2), q("b", 1)], ["a"])
    clock.advance(102.0)
    box.put([q("a", 3), q("b", 2)], [], ["fill"])
    clock.advance(103.0)
    box.put([q("a", 4)], [])
    assert box.oldest() == 100.0
    got = [await box.get_stamped() for _ in range(len(box))]
    assert got == [(QUOTE, q("a", 1), 100.0), (QUOTE, q("a", 2), 101.0), (QUOTE, q("b", 1), 101.0),
                   (BAR, "a", 101.0), (EVENT, "fill", 102.0),
                   # Coalesced: the newest quote, dated by the oldest news it stands for.
                   (QUOTE, q("a", 4), 102.0), (QUOTE, q("b", 2), 102.0)]
    assert box.coalesced == 3
    assert box.oldest() is None


async def test_a_strategy_thread_runs_calls_in_order_on_one_thread_and_can_be_abandoned():
    worker = StrategyThread("t")
    seen: list[tuple[int, str]] = []
    try:
        for i in range(20):
            assert await worker.call("on_quote", lambda i=i: seen.append(
                (i, threading.current_thread().name)) or i * 2) == i * 2
        assert seen == [(i, "strategy t") for i in range(20)]
        with pytest.raises(ZeroDivisionError):
            await worker.call("on_bar", lambda: 1 / 0)
        gate = threading.Event()
        with trio.move_on_after(0.01) as scope:  # MockClock: no real time passes
            await worker.call("on_quote", gate.wait, WAIT)
        assert scope.cancelled_caught
        assert worker.busy is not None
        assert worker.busy[0] == "on_quote"  # abandoned, still running in its thread
        gate.set()
        # The next call queues behind it, and only its own result comes back.
        assert await worker.call("on_quote", lambda: "next") == "next"
        await worker.wait_idle()
        assert worker.busy is None
    finally:
        worker.close()


class Router(IntentLog):
    """Records the thread each order was placed on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def submit(self, order: SubmitOrder) -> None:
        self.threads.append(threading.current_thread().name)
        super().submit(order)

    def position(self, symbol: str) -> float:
        self.threads.append(threading.current_thread().name)
        return super().position(symbol)


async def test_a_thread_context_trades_and_reads_the_clock_on_the_loop(autojump_clock):
    router = Router()
    ctx = Context(symbols=["aaa"], timeframe=1, bars={}, quotes={"aaa": {"last": 5.0}},
                  clock=LiveClock(T0), router=router, strategy_name="S")
    await trio.sleep(2.5)
    adopted = ThreadContext.adopt(ctx)
    assert adopted is ctx
    assert isinstance(ctx, ThreadContext)

    def in_thread():
        return (ctx.buy("aaa", 1.0), ctx.target("aaa", -2.0), ctx.now, ctx.position("aaa"),
                ctx.quote("aaa"), ctx.now_str())  # now_str: the stamp of Strategy.log lines

    first, second, now, position, quote, stamp = await trio.to_thread.run_sync(in_thread)
    assert stamp == "2023-11-14T22:13:22.500Z"
    assert (first, second) == ("S.1700000000.1", "S.1700000000.2")
    assert [(o.side, o.size, o.time) for o in router.orders] == [("buy", 1.0, T0 + 2.5),
                                                                ("sell", 3.0, T0 + 2.5)]
    assert now == T0 + 2.5
    assert position == -2.0
    assert quote == {"last": 5.0}
    loop = threading.current_thread().name
    assert set(router.threads) == {loop}  # never the worker's
    assert ctx.buy("aaa", 1.0) == "S.1700000000.3"  # and still usable on the loop itself


def runner_of(strategy: Strategy, watchdog: Watchdog | None = None) -> StrategyRunner:
    ctx = Context(symbols=["aaa"], timeframe=1, bars={}, quotes={}, clock=LiveClock(T0),
                  router=IntentLog(), strategy_name=strategy.name)
    return StrategyRunner(strategy=strategy, context=ctx, watchdog=watchdog)


async def feed_until(runner: StrategyRunner, done: trio.Event, quotes: int) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run)
        for i in range(1, quotes + 1):
            runner.deliver([q("aaa", i)], [])
            await trio.sleep(0.1)
        await done.wait()
        nursery.cancel_scope.cancel()


async def test_an_async_callback_that_blocks_is_reported_and_stays_on_the_loop(autojump_clock,
                                                                        overruns):
    done = trio.Event()

    class AsyncBlocker(Strategy):
        def on_start(self):
            self.threads = []

        async def on_quote(self, quote):
            self.threads.append(threading.current_thread().name)
            if quote["seq"] == 1:
                assert overruns.flagged.wait(WAIT)  # blocks the loop, as time.sleep would
            if quote["seq"] == 3:
                done.set()

    strat = AsyncBlocker()
    runner = runner_of(strat)
    await feed_until(runner, done, 3)
    assert overruns.messages == [
        overruns.messages[0]]
    assert "AsyncBlocker: async on_quote has held the event loop" in \
        overruns.messages[0]
    assert "async callbacks run on the loop and must not block" in overruns.messages[0]
    assert set(strat.threads) == {threading.current_thread().name}
    assert not runner.off_loop
    assert runner.stats.held_by == "async on_quote"
    assert runner.stats.held >= runner.watchdog.budget


async def test_an_error_in_the_worker_thread_stops_the_strategy_with_its_own_lines():
    class Fails(Strategy):
        blocking = True

        def on_quote(self, quote):
            if quote["seq"] == 2:
                raise ValueError("bad input in the thread")

        def on_stop(self):
            raise AssertionError("a failed strategy gets no on_stop")

    runner = runner_of(Fails())
    async with trio.open_nursery() as nursery:  # run() returns when the strategy fails
        nursery.start_soon(runner.run)
        runner.deliver([q("aaa", 1), q("aaa", 2), q("aaa", 3)], [])
    assert runner.stats.error.startswith("Fails.on_quote raised:")
    assert "test_blocking.py" in runner.stats.error
    assert "ValueError: bad input in the thread" in runner.stats.error
    assert runner.stats.quotes == 2


def test_blocking_is_a_declaration_not_a_parameter():
    class Declared(Strategy):
        blocking = True
        size: float = 1.0

    assert Declared.param_names() == ["size"]
    assert Declared().blocking is True
    assert Strategy.blocking is False


def test_a_watchdog_budget_must_be_positive():
    with pytest.raises(ValueError, match="callback budget must be positive seconds"):
        Watchdog(0)
