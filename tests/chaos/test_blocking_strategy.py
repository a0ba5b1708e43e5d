"""A strategy that blocks, next to a quick one: the quick one keeps its bars, in time; the slow one
moves to its own thread, keeps its order of events and still trades; the run ends on time.

Blocking callbacks wait on `threading.Event`s the test controls (never on sleeps), and an
overrun is released only once the watchdog has logged it, so nothing here races the clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import trio

from engine import LiveClock, Strategy, run_live
from engine.clearing.broker import open_account
from tests.conftest import shm_names
from tests.engine.scripted import make_provider

T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0  # seconds a blocked callback waits for the test before giving up (a failure)


class Quick(Strategy):
    symbols = ("aaa",)

    def on_start(self):
        self.seqs, self.bars = [], []

    def on_quote(self, quote):
        self.seqs.append(quote["seq"])

    def on_bar(self, symbol):
        end = int(self.ctx.ohlcv(symbol)["time"][-1]) + self.ctx.timeframe
        self.bars.append((end, self.ctx.now))

    def on_stop(self):
        self.stored = [int(t) + self.ctx.timeframe for t in self.ctx.ohlcv("aaa")["time"]]


def assert_every_bar_on_time(quick: Quick, every: float) -> None:
    """Every bar the sampler closed reached `quick` in order, within one quote of its end."""
    ends = [end for end, _ in quick.bars]
    assert ends == sorted(set(ends))
    # A bar closing at the very instant the run stops may be stored but not yet delivered.
    assert ends == quick.stored[:len(ends)]
    assert len(quick.stored) - len(ends) <= 1
    late = [(end, now - end) for end, now in quick.bars if not end <= now <= end + every]
    assert not late, f"bars delivered late (end, seconds late): {late[:5]}"


async def test_a_strategy_stuck_in_its_thread_costs_the_quick_one_no_bar(autojump_clock):
    gate = threading.Event()

    class Stuck(Strategy):
        blocking = True

        def on_start(self):
            self.threads = {threading.current_thread().name}

        def on_quote(self, quote):
            self.threads.add(threading.current_thread().name)
            gate.wait(WAIT)

    quick, stuck = Quick(), Stuck()
    try:
        result = await run_live([quick, stuck], provider=make_provider(every=0.05),
                                symbols=["aaa"], timeframe="1s", duration=20,
                                clock=LiveClock(T0), mailbox=8)
    finally:
        gate.set()
    assert stuck.threads == {"strategy Stuck"}  # on_start too: it declared itself blocking
    assert quick.seqs == list(range(1, len(quick.seqs) + 1))
    assert len(quick.seqs) >= 390
    assert len(quick.bars) >= 19
    assert_every_bar_on_time(quick, 0.05)
    # The run ends at its duration plus the stop budget it gives the stuck callback, no later.
    assert 20 <= result.seconds <= 25 + 0.1
    report = {s.name: s for s in result.strategies}
    assert report["Quick"].error is None
    assert report["Quick"].off_loop is None
    slow = report["Stuck"]
    assert slow.quotes == 1
    assert slow.coalesced > 300
    assert slow.stuck == "on_quote"
    assert "Stuck.on_quote was still running in its worker thread" in slow.error
    assert slow.behind > 10  # its mailbox waited most of the run
    summary = result.summary()
    assert "Stuck: FAILED" in summary
    assert ("slow: callbacks in its own thread since 2023-11-14T22:13:20Z (declared blocking); "
            "on_quote still running when the run ended") in summary
    assert "Quick: ok" in summary


async def test_an_overrunning_strategy_moves_to_a_thread_and_still_trades(autojump_clock,
                                                                        overruns):
    """Its first long callback is flagged by the watchdog while it holds the loop; from then on
    its callbacks run in its own thread, in order, and its orders reach the paper broker."""
    clock = LiveClock(T0)
    broker = open_account("blocking", ["aaa"], cash=100_000.0, clock=clock, durable=False)
    loop_thread = threading.current_thread().name
    all_seen = trio.Event()
    token = trio.lowlevel.current_trio_token()
    count = 40

    class Slow(Strategy):
        def on_start(self):
            self.log, self.fill_threads = [], set()
            self.quote_threads: list[str] = []

        def on_quote(self, quote):
            self.log.append(("quote", quote["seq"]))
            self.quote_threads.append(threading.current_thread().name)
            if len(self.log) == 1:
                # Hold the loop until the watchdog has seen it: a real overrun, never a race.
                assert overruns.flagged.wait(WAIT)
            if quote["seq"] == 5:
                self.log.append(("buy", self.ctx.buy("aaa", 2.0)))
            if quote["seq"] == 20:
                self.ctx.target("aaa", -1.0)
            self.maybe_done()

        def maybe_done(self):
            fills = [e for e in self.log if e[0] == "fill"]
            if ("quote", count) in self.log and len(fills) == 2:
                trio.from_thread.run_sync(all_seen.set, trio_token=token)

        def on_bar(self, symbol):
            self.log.append(("bar", int(self.ctx.ohlcv(symbol)["time"][-1])))

        def on_fill(self, fill):
            self.log.append(("fill", fill.client_id))
            self.fill_threads.add(threading.current_thread().name)
            self.maybe_done()

    quick, slow = Quick(), Slow()
    with trio.move_on_after(10_000):  # the run ends when the slow strategy has every quote
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: run_live(
                # Quotes keep coming: while the loop waits on the strategy's thread, the
                # autojump clock moves to the next quote, never to the test's far deadline.
                [quick, slow], provider=make_provider(symbols=("aaa",), every=0.05),
                symbols=["aaa"], timeframe="1s", clock=clock, router=broker))
            await all_seen.wait()
            nursery.cancel_scope.cancel()
    assert len(overruns.messages) == 1
    assert "Slow: on_quote has held the event loop" in overruns.messages[0]
    assert "its callbacks run in its own worker thread from now on" in overruns.messages[0]
    # Every quote, in order, the first on the loop and the rest in its thread.
    quotes = [seq for kind, seq in slow.log if kind == "quote"]
    assert quotes == list(range(1, len(quotes) + 1))
    assert len(quotes) >= count
    assert slow.quote_threads == [loop_thread] + ["strategy Slow"] * (len(quotes) - 1)
    # A bar is heard in order and never before it closed.
    bars = [t for kind, t in slow.log if kind == "bar"]
    assert bars == sorted(set(bars))
    assert bars
    # Orders from the thread reached the broker, and their fills came back to the thread after
    # the quote that placed them.
    assert [(f.side, f.size) for f in broker.fills] == [("buy", 2.0), ("sell", 3.0)]
    assert slow.fill_threads == {"strategy Slow"}
    fills = [(i, cid) for i, (kind, cid) in enumerate(slow.log) if kind == "fill"]
    buy = slow.log.index(("quote", 5)) + 1
    assert slow.log[buy][0] == "buy"
    assert len(fills) == 2
    assert fills[0] == (fills[0][0], slow.log[buy][1])
    assert fills[0][0] > buy
    assert fills[1][0] > slow.log.index(("quote", 20))
    assert broker.account.position("aaa") == -1.0
    assert quick.seqs[:count] == list(range(1, count + 1))  # the quick one heard them all
    ends = [end for end, _ in quick.bars]
    assert ends == sorted(set(ends))
    assert len(ends) >= 1
    assert all(end <= now <= end + 0.05 for end, now in quick.bars)


async def test_cancelling_a_run_stops_waiting_for_a_stuck_thread(autojump_clock):
    gate = threading.Event()
    entered = trio.Event()
    token = trio.lowlevel.current_trio_token()

    class Stuck(Strategy):
        blocking = True

        def on_start(self):
            self.stopped = False

        def on_bar(self, symbol):
            trio.from_thread.run_sync(entered.set, trio_token=token)
            gate.wait(WAIT)

        def on_stop(self):
            self.stopped = True

    two_bars = trio.Event()

    class Counting(Quick):
        def on_bar(self, symbol):
            super().on_bar(symbol)
            if len(self.bars) >= 2 and entered.is_set():
                two_bars.set()

    quick, stuck = Counting(), Stuck()
    scope = trio.CancelScope()
    cancelled_at = []

    async def cancel_while_stuck() -> None:
        # Cancel once the thread is inside on_bar (the mock clock runs ahead of a thread
        # starting on a loaded machine) and the quick strategy heard bars meanwhile.
        await two_bars.wait()
        cancelled_at.append(trio.current_time())
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_while_stuck)
            with scope:
                await run_live([quick, stuck], provider=make_provider(every=0.1),
                               symbols=["aaa"], clock=LiveClock(T0))
        t_end = trio.current_time()
    finally:
        gate.set()
    assert scope.cancelled_caught
    assert t_end <= cancelled_at[0] + 5 + 0.1  # the stop budget, then the run lets go of it
    assert not stuck.stopped  # on_stop never runs beside a callback still running


def _engine_run(path: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "run", str(path), "--history",
                             "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)


STUCK_ON_LOOP = """
import signal
import threading
from engine import Strategy


class StuckOnLoop(Strategy):
    symbols = ("btcusd",)
    warmup = 0  # no dry on_start (it would wait out its own 10 s budget first)

    def {callback}(self, *args):
        if {mask}:
            signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT, signal.SIGTERM}})
        threading.Event().wait()
"""


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # a hung run fails the test instead of hanging the suite
        proc.communicate()
        raise


def _segments_of(pid: int) -> set[str]:
    return {n for n in shm_names() if n.startswith(f"engine_{pid}_")}


def test_a_callback_stuck_on_the_loop_is_interrupted_at_the_end_of_the_run(tmp_path):
    path = tmp_path / "stuck_on_loop.py"
    # on_start: stuck before any quote arrives, so the run's end is sure to find it there.
    path.write_text(STUCK_ON_LOOP.format(callback="on_start", mask=False))
    with _engine_run(path, "--duration", "2") as proc:
        out, err = _finish(proc, 120)
    assert proc.returncode == 1, err
    assert "StuckOnLoop: on_start has held the event loop" in err
    assert "StuckOnLoop.on_start was interrupted after holding the event loop" in err
    assert "StuckOnLoop: FAILED" in out
    assert "slow: on_start held the event loop for" in out
    assert "Traceback" not in err
    assert not _segments_of(proc.pid)


def test_ctrl_c_interrupts_a_callback_stuck_on_the_loop(tmp_path):
    path = tmp_path / "stuck_on_loop.py"
    path.write_text(STUCK_ON_LOOP.format(callback="on_quote", mask=False))
    with _engine_run(path) as proc:
        for line in proc.stderr:
            if "has held the event loop" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = _finish(proc, 60)
    assert proc.returncode == 1, err
    assert "(interrupted)" in out
    assert "StuckOnLoop.on_quote was interrupted" in err
    assert not _segments_of(proc.pid)


def test_a_callback_that_cannot_be_interrupted_ends_the_process_without_leaks(tmp_path):
    path = tmp_path / "stuck_on_loop.py"
    # It blocks the signal the watchdog would interrupt it with.
    path.write_text(STUCK_ON_LOOP.format(callback="on_start", mask=True))
    with _engine_run(path, "--duration", "2") as proc:
        out, err = _finish(proc, 120)
    assert proc.returncode == 1, err
    assert "cannot be interrupted; exiting" in err
    assert not _segments_of(proc.pid)
