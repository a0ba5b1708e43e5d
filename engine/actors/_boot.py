"""The first code a child actor runs: watch the parent from process start, then run tractor's
own child entry (`tractor._child`).

The engine starts child actors as `python -m engine.actors._boot --parent-fd N <tractor's
arguments>` (`engine.actors._runtime` rewrites tractor's `python -m tractor._child` command).
File descriptor N is the read end of a pipe whose only write end the parent holds and never
writes: when the parent dies, however it dies (kill -9 too), the kernel closes that end and a
read here returns end-of-file. A thread blocked on that read is started before tractor is
imported (a second or more of imports on a loaded machine, during which a child would
otherwise not notice), so there is no moment at which a child can outlive its parent.

On end-of-file the thread sends this process SIGTERM: an actor whose runtime runs stops in
order on it (`_runtime.guard_child`: ledgers closed, shared memory unlinked); one still starting
dies at once (the default action). If the process still runs `GRACE` seconds later, SIGKILL.

Why not `prctl(PR_SET_PDEATHSIG)`: the kernel sends that signal when the parent *thread* that
forked the child exits, and trio forks from a worker thread of its thread cache, which exits
after 10 idle seconds: every child would be killed 10 s after it started.

This module imports nothing from the engine or tractor; `engine` and `engine.actors`, which
Python imports first to find it, load their contents lazily.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time

__all__ = ["GRACE", "watch_parent"]

# Seconds an actor gets to stop in order after its parent died (a paper account's ledger close
# and the feed daemon's unlinks take milliseconds; a strategy's on_stop is bounded at 5 s by the
# scheduler, but a strategy whose parent is gone has no one to report to).
GRACE = 3.0


def _wait_for_eof(fd: int) -> None:
    try:
        while os.read(fd, 64):
            pass  # the parent never writes; anything read is ignored
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE)
    os.kill(os.getpid(), signal.SIGKILL)


def watch_parent(fd: int) -> threading.Thread:
    """Start the daemon thread that ends this process once the write end of pipe `fd` closes."""
    os.set_inheritable(fd, False)  # this process's own children watch this process, not ours
    thread = threading.Thread(target=_wait_for_eof, args=(fd,), name="engine-parent-watch",
                              daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] != "--parent-fd" or not argv[1].isdigit():
        sys.exit("engine.actors._boot: usage: --parent-fd N <tractor._child arguments>")
    watch_parent(int(argv[1]))
    # The root turns Ctrl-C into an orderly teardown of the whole tree; a child must not take
    # the terminal's SIGINT as its own, not even while it starts (trio then leaves it ignored).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.argv = ["tractor._child", *argv[2:]]
    runpy.run_module("tractor._child", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
