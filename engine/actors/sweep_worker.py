"""One local sweep worker: `python -m engine.actors.sweep_worker FD`, a process of its own.

It is started by `engine.actors.sweep_local` with one end of a socket pair as file descriptor
FD, and is its own main module: it never imports the caller's `__main__` (a notebook, a script
read from standard input, a script without an `if __name__ == "__main__":` guard all sweep the
same way). Over the socket it receives the sweep's setup once (the evaluation function's name,
the strategy file's path, the history tokens, the options, the caller's import path), answers
`{"worker": "host:pid"}` or `{"error": ...}`, then evaluates jobs (`{"id", "params",
"options"?}`) one at a time, answering each with `{"id", "metrics" | "error", "seconds",
"worker"}`, until the socket closes or a None job comes.

It dies with its parent (Linux: the kernel sends it SIGKILL), ignores the terminal's Ctrl-C
(its parent decides), and on SIGTERM stops at once, cleaning up as an exception does: a
backtest interrupted that way unlinks its own shared memory, so nothing is left behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

_PR_SET_PDEATHSIG = 1


class Stop(BaseException):
    """SIGTERM from the sweep: leave the current job now (cleanup still runs)."""


def _die_with(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the socket's EOF still ends the loop
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _stop(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
    raise Stop


def serve(conn: Connection) -> None:
    """Answer the setup, then evaluate jobs until the connection ends."""
    setup = conn.recv()
    for entry in reversed(setup.get("path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    from engine.actors.pool import clean_metrics, load_evaluate

    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        fn = load_evaluate(setup["evaluate"])
    except Exception as exc:  # noqa: BLE001 - a bad name or an import error: say which
        conn.send({"error": f"cannot load evaluate function {setup['evaluate']!r}: "
                            f"{type(exc).__name__}: {exc}"})
        return
    conn.send({"worker": worker})
    path, history, options = setup["strategy_path"], setup["history"], setup["options"]
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        t0 = time.perf_counter()
        opts = {**options, **job["options"]} if job.get("options") else options
        try:
            out = {"id": job["id"], "metrics": clean_metrics(fn(path, job["params"], history,
                                                                 opts))}
        except Exception as exc:  # noqa: BLE001 - one bad combination fails alone
            out = {"id": job["id"], "error": f"{type(exc).__name__}: {exc}"}
        out.update(seconds=time.perf_counter() - t0, worker=worker)
        conn.send(out)


def main(argv: list[str]) -> int:
    fd, parent = int(argv[1]), int(argv[2])
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)
    conn = Connection(fd)
    try:
        serve(conn)
    except (Stop, EOFError, BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
