"""A strategy's own worker thread, for callbacks that block: the event loop never waits on them.

`StrategyThread` runs one strategy's synchronous callbacks, one at a time and in the order they
are handed over, on a dedicated daemon thread (a strategy that opened a database connection in
on_start keeps using it from the same thread). The calling trio task waits without blocking the
loop and can stop waiting (cancellation abandons the call: a thread cannot be killed).
`ThreadContext` is the Context such a strategy sees: its clock reads and order entry run on the
trio loop through `trio.from_thread.run_sync`, so a worker thread never touches loop state.
Nothing here runs user code on the loop thread.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import outcome
import trio

from engine.strategy import Context

__all__ = ["StrategyThread", "ThreadContext"]


class StrategyThread:
    """One daemon thread that runs the callbacks of one strategy, in submission order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._token = trio.lowlevel.current_trio_token()
        self._jobs: queue.SimpleQueue[tuple[int, Callable[..., Any], tuple] | None] = \
            queue.SimpleQueue()
        self._ids = itertools.count(1)
        self._waiting: tuple[int, trio.lowlevel.Task] | None = None
        self._done = trio.lowlevel.ParkingLot()
        # Loop-side view of the job in flight: (callback name, monotonic start) or None.
        self.busy: tuple[str, float] | None = None
        self.slowest = 0.0  # seconds, the longest call so far (measured in the thread)
        self._thread = threading.Thread(target=self._work, name=f"strategy {name}", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job_id, fn, args = job
            t0 = time.monotonic()
            result = outcome.capture(fn, *args)
            self.slowest = max(self.slowest, time.monotonic() - t0)
            try:
                self._token.run_sync_soon(self._deliver, job_id, result)
            except trio.RunFinishedError:
                return  # the run is over: nobody waits for this thread any more

    def _deliver(self, job_id: int, result: outcome.Outcome) -> None:
        # On the loop. An abandoned call's result is dropped; the thread is free again.
        self.busy = None
        self._done.unpark_all()
        if self._waiting is not None and self._waiting[0] == job_id:
            task = self._waiting[1]
            self._waiting = None
            trio.lowlevel.reschedule(task, result)

    async def call(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in the thread and return its result; cancelling stops the wait (the
        call goes on in the thread, and the next call queues behind it)."""
        job_id = next(self._ids)
        self._waiting = (job_id, trio.lowlevel.current_task())
        self.busy = (where, time.monotonic())
        self._jobs.put((job_id, fn, args))

        def abandon(_: Any) -> trio.lowlevel.Abort:
            self._waiting = None
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abandon)

    async def wait_idle(self) -> None:
        """Wait until no call is in flight."""
        while self.busy is not None:
            await self._done.park()

    def close(self) -> None:
        """Let the thread end after its current call (it is never joined: it may be stuck)."""
        self._jobs.put(None)


class ThreadContext(Context):
    """A Context used from a strategy's worker thread: clock and order entry run on the loop.

    Bars (`ohlcv`, indicators) and quotes are read in place, as on the loop: the feed only
    appends past what the strategy has been shown.
    """

    _token: trio.lowlevel.TrioToken
    _loop_thread: int

    @classmethod
    def adopt(cls, ctx: Context) -> ThreadContext:
        """Turn `ctx` (in place: the strategy may hold it) into a ThreadContext; call on the loop."""
        ctx.__class__ = cls
        assert isinstance(ctx, ThreadContext)
        ctx._token = trio.lowlevel.current_trio_token()
        ctx._loop_thread = threading.get_ident()
        return ctx

    def _on_loop(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if threading.get_ident() == self._loop_thread:
            return fn(self, *args, **kw)
        return trio.from_thread.run_sync(lambda: fn(self, *args, **kw), trio_token=self._token)

    @property
    def now(self) -> float:
        """Engine clock, epoch seconds (read on the loop)."""
        return self._on_loop(lambda self: self.clock.now())

    def position(self, symbol: str) -> float:
        return self._on_loop(Context.position, symbol)

    def buy(self, *args: Any, **kw: Any) -> str:
        return self._on_loop(Context.buy, *args, **kw)

    def sell(self, *args: Any, **kw: Any) -> str:
        return self._on_loop(Context.sell, *args, **kw)

    def target(self, *args: Any, **kw: Any) -> str | None:
        # One trip: the position and the order it leads to are read and placed together.
        return self._on_loop(Context.target, *args, **kw)

    def close(self, symbol: str) -> str | None:
        return self._on_loop(Context.close, symbol)

    def cancel(self, client_id: str) -> None:
        self._on_loop(Context.cancel, client_id)

    def modify(self, *args: Any, **kw: Any) -> None:
        self._on_loop(Context.modify, *args, **kw)

    def oco(self, first: str, second: str) -> None:
        self._on_loop(Context.oco, first, second)

    # Orders sized from the account: the account is read and the orders placed in one trip.
    def target_value(self, *args: Any, **kw: Any) -> str | None:
        return self._on_loop(Context.target_value, *args, **kw)

    def target_percent(self, *args: Any, **kw: Any) -> str | None:
        return self._on_loop(Context.target_percent, *args, **kw)

    def rebalance(self, *args: Any, **kw: Any) -> list[str]:
        return self._on_loop(Context.rebalance, *args, **kw)

    # Account reads, on the loop: the broker changes the account there.
    @property
    def cash(self) -> float:
        return self._on_loop(lambda self: Context.cash.fget(self))

    @property
    def equity(self) -> float:
        return self._on_loop(lambda self: Context.equity.fget(self))

    @property
    def buying_power(self) -> float:
        return self._on_loop(lambda self: Context.buying_power.fget(self))

    def holding(self, symbol: str) -> Any:
        return self._on_loop(Context.holding, symbol)

    def orders(self, symbol: str | None = None) -> list[Any]:
        return self._on_loop(Context.orders, symbol)
