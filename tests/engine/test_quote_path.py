"""The quote path in one process: a quote for a waiting strategy reaches its synchronous
on_quote within the feed's own call (no mailbox, no task switch), yet never overtakes what
already waits in the mailbox; an on_quote that raises or overruns there stops the strategy or
moves it to its thread exactly as when the runner's task called it."""

from __future__ import annotations

import threading
import time

import numpy as np
import trio
import trio.testing

from engine import LiveClock, Strategy
from engine.dtypes import ohlc_dtype, tick_dtype
from engine.feed import Feed
from engine.sampler import Sampler
from engine.scheduler import StrategyRunner
from engine.shm import ShmArray
from engine.strategy import Context, IntentLog
from engine.watchdog import Watchdog

T0 = 1_700_000_000.0
WAIT = 30.0


def q(seq: int) -> dict:
    return {"symbol": "aaa", "seq": seq, "time": T0 + seq}


class Log(Strategy):
    symbols = ("aaa",)

    def on_start(self):
        self.log = []

    def on_quote(self, quote):
        self.log.append(("quote", quote["seq"], threading.current_thread().name))

    def on_bar(self, symbol):
        self.log.append(("bar", int(self.ctx.ohlcv(symbol)["time"][-1]),
                         threading.current_thread().name))


def runner_of(strategy: Strategy, bars: ShmArray, watchdog: Watchdog) -> StrategyRunner:
    ctx = Context(symbols=["aaa"], timeframe=1, bars={"aaa": bars}, quotes={},
                  clock=LiveClock(T0), router=IntentLog(), strategy_name=strategy.name)
    return StrategyRunner(strategy=strategy, context=ctx, watchdog=watchdog)


def push_bar(bars: ShmArray, t: int) -> None:
    row = np.zeros(1, dtype=ohlc_dtype)
    row["time"] = t
    row["open"] = row["high"] = row["low"] = row["close"] = 100.0
    bars.push(row)


async def test_a_quote_reaches_a_waiting_strategy_in_the_feeds_call_and_queues_behind_a_bar():
    strategy = Log()
    loop = threading.current_thread().name
    with ShmArray.create(ohlc_dtype, 100, start=0) as bars, Watchdog(WAIT) as wd:
        runner = runner_of(strategy, bars, wd)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run)
            await trio.testing.wait_all_tasks_blocked()
            runner.deliver([q(1), q(2)], [])
            # Called before deliver returned: no task ran in between.
            assert [e[1] for e in strategy.log] == [1, 2]
            push_bar(bars, int(T0))
            runner.deliver([q(3)], ["aaa"])
            runner.deliver([q(4)], [])  # the bar waits in the mailbox: this one waits after it
            assert [e[1] for e in strategy.log] == [1, 2, 3]
            await trio.testing.wait_all_tasks_blocked()
            assert strategy.log == [("quote", 1, loop), ("quote", 2, loop), ("quote", 3, loop),
                                    ("bar", int(T0), loop), ("quote", 4, loop)]
            runner.deliver([q(5)], [])  # the mailbox is empty again: straight in
            assert strategy.log[-1] == ("quote", 5, loop)
            nursery.cancel_scope.cancel()
    assert runner.stats.quotes == 5
    assert runner.stats.bars == 1


async def test_an_on_quote_that_raises_in_the_feeds_call_stops_only_its_strategy():
    class Broken(Log):
        def on_quote(self, quote):
            super().on_quote(quote)
            if quote["seq"] == 2:
                raise ZeroDivisionError("bad math in on_quote")

    broken, good = Broken(), Log()
    with ShmArray.create(ohlc_dtype, 100, start=0) as bars, Watchdog(WAIT) as wd:
        runners = [runner_of(broken, bars, wd), runner_of(good, bars, wd)]
        async with trio.open_nursery() as nursery:
            for runner in runners:
                nursery.start_soon(runner.run)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(1, 6):
                for runner in runners:
                    runner.deliver([q(i)], [])  # the feed's call: nothing escapes into it
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    error = runners[0].stats.error
    assert error is not None
    assert "Broken.on_quote raised" in error
    assert "ZeroDivisionError: bad math in on_quote" in error
    assert "test_quote_path.py" in error
    assert [e[1] for e in broken.log] == [1, 2]  # nothing after the quote that raised
    assert [e[1] for e in good.log] == [1, 2, 3, 4, 5]
    assert runners[1].stats.error is None


async def test_an_on_quote_that_overruns_in_the_feeds_call_moves_the_strategy_to_its_thread():
    class Slow(Log):
        heard = {3: threading.Event(), 4: threading.Event()}

        def on_quote(self, quote):
            super().on_quote(quote)
            if quote["seq"] in self.heard:
                self.heard[quote["seq"]].set()
            if quote["seq"] == 2:
                # Hold the loop until the watchdog has flagged this call (however long that
                # takes on a busy machine).
                deadline = time.monotonic() + WAIT
                while self.runner._overrun is None and time.monotonic() < deadline:
                    time.sleep(0.005)

    slow = Slow()
    loop = threading.current_thread().name
    with ShmArray.create(ohlc_dtype, 100, start=0) as bars, Watchdog(0.02) as wd:
        runner = slow.runner = runner_of(slow, bars, wd)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run)
            await trio.testing.wait_all_tasks_blocked()
            runner.deliver([q(1), q(2), q(3)], [])
            assert [e[1] for e in slow.log] == [1, 2]  # 3 waits for the runner
            with trio.fail_after(WAIT):
                await trio.to_thread.run_sync(slow.heard[3].wait, WAIT)  # in the worker thread
                runner.deliver([q(4)], [])  # off the loop now: through the mailbox
                await trio.to_thread.run_sync(slow.heard[4].wait, WAIT)
            nursery.cancel_scope.cancel()
    assert [e[1] for e in slow.log] == [1, 2, 3, 4]
    assert [e[2] for e in slow.log[:2]] == [loop, loop]
    assert [e[2] for e in slow.log[2:]] == ["strategy Slow", "strategy Slow"]
    assert runner.off_loop
    assert runner.stats.held_by == "on_quote"


async def test_every_subscriber_has_the_batch_before_a_strategy_is_called_on_it():
    # A paper broker subscribes after the strategies: it must still have marked a quote before
    # an order placed on that quote reaches it, and the fills it causes come after the quote.
    seen_by_broker: list[int] = []

    class Trader(Log):
        def on_quote(self, quote):
            super().on_quote(quote)
            assert quote["seq"] in seen_by_broker, "the broker had not seen the quote yet"

    trader = Trader()
    with ShmArray.create(tick_dtype, 1000, start=0) as ticks, \
            ShmArray.create(ohlc_dtype, 100, start=0) as bars, Watchdog(WAIT) as wd:
        feed = Feed(provider=type("P", (), {"name": "test"})(), symbols=["aaa"], timeframe=1,
                    clock=LiveClock(T0), ticks=ticks, bars={"aaa": bars}, sampler=Sampler(1, [bars]))
        runner = runner_of(trader, bars, wd)
        feed.subscribe(runner.queue, runner.flush)
        feed.subscribe(lambda quotes, closed, events: seen_by_broker.extend(
            q["seq"] for q in quotes))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run)
            await trio.testing.wait_all_tasks_blocked()
            for i in range(1, 4):
                feed.process([q(i), q(i + 10)])
                # Called within the feed's call, after the broker subscriber had the batch.
                assert [e[1] for e in trader.log][-2:] == [i, i + 10]
            nursery.cancel_scope.cancel()
    assert runner.stats.error is None
    assert [e[1] for e in trader.log] == [1, 11, 2, 12, 3, 13]


async def test_the_first_quote_of_a_provider_turn_is_processed_in_its_send_the_rest_batched():
    from engine.feed import _Inbox, _pump

    with ShmArray.create(tick_dtype, 1000, start=0) as ticks, \
            ShmArray.create(ohlc_dtype, 100, start=0) as bars:
        feed = Feed(provider=type("P", (), {"name": "test"})(), symbols=["aaa"], timeframe=1,
                    clock=LiveClock(T0), ticks=ticks, bars={"aaa": bars},
                    sampler=Sampler(1, [bars]))
        batches: list[list[int]] = []
        feed.subscribe(lambda quotes, closed, events: batches.append([q["seq"] for q in quotes]))
        inbox = _Inbox(feed, size=4)
        inbox.send_nowait(q(1))  # before the feed is set up: it waits
        assert batches == []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, feed, inbox)
            await trio.testing.wait_all_tasks_blocked()
            assert batches == [[1]]
            for turn in (range(2, 5), range(5, 8)):
                for i in turn:
                    inbox.send_nowait(q(i))
                # The turn's first quote went through within its send; the rest wait.
                assert batches[-1] == [turn[0]]
                await trio.testing.wait_all_tasks_blocked()
                assert batches[-1] == list(turn[1:])
            for i in range(8, 13):  # a burst past the inbox's room: send waits, nothing lost
                await inbox.send(q(i))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    seqs = [s for b in batches for s in b]
    assert seqs == list(range(1, 13))
    assert feed.stats.quotes == 12
