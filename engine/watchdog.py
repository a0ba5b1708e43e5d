"""The watchdog: a thread that notices a strategy callback holding the event loop.

Strategy callbacks run inline on the trio loop (no thread hop: the quote reaches `on_quote` in
microseconds). Around each one the runner writes itself into `Watchdog.who`, two attribute
stores and nothing else on the hot path. The watchdog thread polls that slot every quarter
budget; when the same call has held the loop for `budget` seconds it flags the runner (and logs
it), and from its next event on the runner sends that strategy's synchronous callbacks to the
strategy's own worker thread (`engine.worker`). Python cannot pause the call that overran: it
holds the loop until it returns. If it is still running when the run must end (past its duration,
or on Ctrl-C / SIGTERM), the watchdog interrupts it with a KeyboardInterrupt raised in the loop
thread, which the runner turns into that strategy's error; with `hard_exit`, a call that cannot be
interrupted ends the process after `HARD_EXIT_AFTER` seconds, its shared memory unlinked first.

The thread only reads the runner's counters and writes plain flags; it never touches loop state.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

__all__ = ["DEFAULT_BUDGET", "Watchdog"]

log = logging.getLogger("engine.watchdog")

_RUNNER_FILE = str(Path(__file__).with_name("scheduler.py"))
# Seconds one callback may hold the event loop before its strategy moves to a worker thread:
# far above a sane callback (microseconds to a few milliseconds) and below a bar of 1 s, so a
# blocking call is caught before it costs the others a bar.
DEFAULT_BUDGET = 0.02
# Seconds past the run's end before a callback still holding the loop is interrupted.
STOP_GRACE = 1.0
# Seconds an interrupted callback may still hold the loop before the process exits (hard_exit).
HARD_EXIT_AFTER = 5.0


class Watchdog:
    """Watches the callbacks that runners mark in `who`; see the module docstring."""

    def __init__(self, budget: float = DEFAULT_BUDGET, *, hard_exit: bool = False,
                 cleanup: Callable[[], None] | None = None) -> None:
        if not budget > 0:
            raise ValueError(f"callback budget must be positive seconds, got {budget!r}")
        self.budget = float(budget)
        self.hard_exit = hard_exit
        self.cleanup = cleanup
        self.who: Any = None  # the runner inside a callback on the loop, or None
        self.stop_at: float | None = None  # time.monotonic() when the run should end
        self.stop_requested = False
        self.interrupting: Any = None  # the runner whose callback is being interrupted
        self._sent = False  # a SIGINT the watchdog sent is on its way
        self._flagged: Any = None  # the runner whose current call overran
        self._flagged_call: tuple | None = None  # that call: (runner, its counts when it began)
        self._loop_thread = threading.get_ident()
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="engine watchdog", daemon=True)

    def start(self) -> None:
        """Start watching (from the loop thread, before the strategies start)."""
        self._thread.start()

    def close(self) -> None:
        """Stop watching; the thread ends within a poll."""
        self._quit.set()
        self._thread.join()

    def __enter__(self) -> Watchdog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def watch(self) -> None:
        """Keep watching until cancelled, then stop (a task in the run's nursery, started
        after `start()`: the strategies' tasks may run before this one does)."""
        try:
            await trio.sleep_forever()
        finally:
            self.close()

    def stop_after(self, seconds: float | None) -> None:
        """The run should end `seconds` from now (wall time: a stuck loop stops every clock)."""
        self.stop_at = None if seconds is None else time.monotonic() + seconds

    def holding(self) -> bool:
        """Whether the loop is inside a call that has overrun (read in the loop thread)."""
        who = self.who
        if who is None or who is not self._flagged:
            return False
        # The same call still: the runner counts each call before making it, so a later call
        # of a runner flagged once (an on_start that overran) is not taken for the stuck one
        # before this thread next looks.
        s = who.stats
        return self._flagged_call == (who, s.quotes, s.bars, s.events)

    # -- the thread ------------------------------------------------------------------------------

    def _watch(self) -> None:
        poll = max(self.budget / 4, 0.001)
        key: tuple | None = None
        since = 0.0
        interrupted_at: float | None = None
        while not self._quit.wait(poll):
            who = self.who
            if who is None:
                key = None
                continue
            now = time.monotonic()
            stats = who.stats
            seen = (who, stats.quotes, stats.bars, stats.events)
            if seen != key:
                key, since, interrupted_at = seen, now, None
                self._flagged = None
                continue
            if self._flagged is None and now - since >= self.budget:
                where = self._where(who)
                if where is None:
                    since = now  # an async callback awaiting: it does not hold the loop
                    continue
                self._flagged = who
                self._flagged_call = seen
                who.overran(where, now - since)
            if self._flagged is None:
                continue
            if interrupted_at is None and self._must_stop(now) and self.interrupting is not who:
                interrupted_at = now
                self._interrupt(who, now - since)
            elif (interrupted_at is not None and self.hard_exit
                  and now - interrupted_at >= HARD_EXIT_AFTER):
                self._exit(who, now - since)

    def _where(self, who: Any) -> str | None:
        """The callback `who` is running on the loop thread's stack, or None if it is not there."""
        frame = sys._current_frames().get(self._loop_thread)
        while frame is not None:
            # The innermost of the runner's own frames names the callback it is in.
            if frame.f_code.co_filename == _RUNNER_FILE and "where" in frame.f_code.co_varnames:
                local = frame.f_locals
                if local.get("self") is who:
                    return str(local["where"])
            frame = frame.f_back
        return None

    def _must_stop(self, now: float) -> bool:
        return self.stop_requested or (self.stop_at is not None
                                       and now >= self.stop_at + STOP_GRACE)

    def _interrupt(self, who: Any, held: float) -> None:
        log.error("strategy %s: a callback has held the event loop for %.1f s and the run must "
                  "end; interrupting it", who.name, held)
        self.interrupting = who
        handler = signal.getsignal(signal.SIGINT)
        # Only the main thread runs Python signal handlers; SIG_DFL would kill the process.
        if (self._loop_thread == threading.main_thread().ident and callable(handler)
                and self.who is who):
            self._sent = True
            signal.pthread_kill(self._loop_thread, signal.SIGINT)

    def _exit(self, who: Any, held: float) -> None:
        log.critical("strategy %s: a callback has held the event loop for %.1f s and cannot be "
                     "interrupted; exiting", who.name, held)
        if self.cleanup is not None:
            self.cleanup()
        logging.shutdown()
        os._exit(1)

    # -- in the loop thread ------------------------------------------------------------------------

    def chain_signals(self, stop: Callable[[], None], *signums: int) -> None:
        """Wrap the current handlers of `signums` (main thread only). A signal that arrives while
        an overrun callback holds the loop interrupts that callback and calls `stop()` (which must
        be safe in a signal handler, e.g. `TrioToken.run_sync_soon`) instead of the handler it
        wraps, whose deliveries could not run; any other signal goes to that handler."""
        for signum in signums:
            inner = signal.getsignal(signum)

            def handler(num: int, frame: Any, inner: Any = inner) -> None:
                ours = num == signal.SIGINT and self._sent
                self._sent = False
                if self.holding():
                    self.interrupting = self.who  # before stop_requested: the thread reads both
                    if not ours:
                        self.stop_requested = True
                        stop()
                    raise KeyboardInterrupt
                if not ours and callable(inner):
                    inner(num, frame)

            signal.signal(signum, handler)
