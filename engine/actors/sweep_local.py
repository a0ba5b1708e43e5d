"""A sweep on this host alone: plain worker processes, no actors, usable from anywhere.

`run_local` starts one worker per core as `python -m engine.actors.sweep_worker` (a neutral
main module: the caller's `__main__` is never imported again, so a sweep runs the same from a
script, a script without an `if __name__ == "__main__":` guard, standard input or a Jupyter
kernel), hands each the sweep's setup once over a socket pair, then feeds it jobs one at a
time until none are left. The workers attach the history's shared memory read-only by token;
they load the strategy from its file.

Stopping: when the caller is interrupted (Ctrl-C, a notebook's interrupt, any exception), every
worker gets SIGTERM, leaves its job through the same cleanup an exception takes (a backtest
unlinks its own segments), and is killed with its process group after STOP_GRACE seconds if
still there, so the sweep ends within a second, silently, and leaves no process. A worker that
dies gives its job back (a job is tried MAX_ATTEMPTS times) and is replaced (MAX_RESPAWNS times
per slot). Nothing here computes metrics or reads the history.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from engine.actors.exits import describe_exit
from engine.actors.sweep_jobs import SweepError, load_evaluate, make_jobs

__all__ = ["run_local", "local_sweep", "STOP_GRACE"]

log = logging.getLogger("engine.actors.sweep")

# Seconds an interrupted worker gets to leave its job cleanly before it is killed.
STOP_GRACE = 0.5
# Seconds a finished sweep waits for its workers to exit after their last job.
EXIT_WAIT = 10.0
# How often (seconds) the progress bar hears that time passed while no result comes.
TICK = 0.25
MAX_ATTEMPTS = 3
MAX_RESPAWNS = 3

ProgressFn = Callable[[int, int, dict], None]
# The engine package's parent folder: workers import engine from where this process does.
_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class _Worker:
    proc: subprocess.Popen
    conn: Connection
    slot: int
    ready: bool = False
    job: dict | None = None
    name: str = ""
    respawns: int = 0


def _spawn(setup: dict, slot: int, respawns: int = 0) -> _Worker:
    ours, theirs = socket.socketpair()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.actors.sweep_worker", str(theirs.fileno()),
             str(os.getpid())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env,
            # Its own session: the terminal's Ctrl-C reaches this process only, which stops
            # the workers itself (a worker seeing it too would print its own traceback).
            start_new_session=True)
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    conn.send(setup)
    return _Worker(proc, conn, slot, respawns=respawns)


def _stop(workers: Sequence[_Worker], interrupted: bool) -> None:
    """End every worker and wait for it: politely after a finished sweep, at once (SIGTERM,
    then SIGKILL of its process group after STOP_GRACE) after an interruption."""
    for w in workers:
        if interrupted:
            try:
                w.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        else:
            try:
                w.conn.send(None)
            except OSError:
                pass
        w.conn.close()
    deadline = time.monotonic() + (STOP_GRACE if interrupted else EXIT_WAIT)
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for w in workers:
        if w.proc.poll() is None:
            try:
                os.killpg(w.proc.pid, signal.SIGKILL)  # with what it started (a tracker)
            except ProcessLookupError:
                pass
            w.proc.wait()


def run_local(strategy_path: str, jobs: list[dict], *, workers: int, evaluate: str,
              history: dict[str, dict], options: dict[str, Any],
              on_result: Callable[[dict, dict], None], progress: Any = None) -> None:
    """Evaluate every job (`{"id", "params", "options"?}`) on `workers` local processes;
    `on_result(job, result)` hears each result, in the order they come. `progress`, when it has
    them, gets `begin(total)`, `refresh()` between results and `close()` at the end."""
    load_evaluate(evaluate)  # a wrong name fails here, once, with its own message
    setup = {"evaluate": evaluate, "strategy_path": strategy_path, "history": history,
             "options": options, "path": [p for p in sys.path if p]}
    pending = deque(jobs)
    attempts: dict[Any, int] = {}
    left = len(jobs)
    live: list[_Worker] = []
    refresh = getattr(progress, "refresh", None)
    interrupted = True
    if hasattr(progress, "begin"):
        progress.begin(len(jobs))

    def finish(job: dict, result: dict) -> None:
        nonlocal left
        left -= 1
        on_result(job, result)

    def feed(w: _Worker) -> None:
        w.job = pending.popleft() if pending else None
        if w.job is not None:
            w.conn.send(w.job)

    try:
        for slot in range(max(1, min(workers, len(jobs)))):
            live.append(_spawn(setup, slot))  # one by one: an interrupt stops those started
        while left > 0:
            if not live:
                raise SweepError("every sweep worker died; see the messages above")
            ready = wait([w.conn for w in live], timeout=TICK)
            if refresh is not None:
                refresh()
            for conn in ready:
                w = next(x for x in live if x.conn is conn)
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    live.remove(w)
                    _lost(w, pending, attempts, finish)
                    if w.respawns < MAX_RESPAWNS and (pending or w.job):
                        live.append(_spawn(setup, w.slot, w.respawns + 1))
                    continue
                if not w.ready:
                    if "error" in msg:  # no worker can run this sweep: every job says why
                        while pending:
                            job = pending.popleft()
                            finish(job, {"id": job["id"], "error": msg["error"]})
                        continue
                    w.ready, w.name = True, msg["worker"]
                else:
                    job, w.job = w.job, None
                    if job is not None:
                        finish(job, msg)
                feed(w)
        interrupted = False
    finally:
        if hasattr(progress, "close"):
            progress.close()
        _stop(live, interrupted)


def _lost(w: _Worker, pending: deque, attempts: dict, finish: Callable[[dict, dict], None]
          ) -> None:
    try:
        code = w.proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        os.killpg(w.proc.pid, signal.SIGKILL)
        code = w.proc.wait()
    w.conn.close()
    why = f"its worker process {describe_exit(code)}"
    log.warning("sweep worker %s: %s; %s", w.slot, why,
                "replacing it" if w.respawns < MAX_RESPAWNS else "giving up on it")
    job = w.job
    if job is None:
        return
    attempts[job["id"]] = attempts.get(job["id"], 0) + 1
    if attempts[job["id"]] >= MAX_ATTEMPTS:
        finish(job, {"id": job["id"],
                     "error": f"gave up after {MAX_ATTEMPTS} attempts; last: {why}"})
    else:
        pending.appendleft(job)


def local_sweep(strategy_path: str, grid: Sequence[dict], history: dict[str, dict], *,
                workers: int, evaluate: str, options: dict[str, Any],
                job_options: Sequence[dict] | None = None, progress: Any = None
                ) -> list[dict[str, Any]]:
    """`run_sweep`'s rows (grid order: params, metrics, error, worker, seconds and the job's
    own options) for a sweep on this host's workers alone; see `run_local`."""
    if workers < 1:
        raise SweepError("no workers: give workers >= 1, or a registry that sweep hosts join")
    jobs = make_jobs(grid, job_options)
    rows: list[dict | None] = [None] * len(jobs)
    done = 0

    def on_result(job: dict, result: dict) -> None:
        nonlocal done
        row = {"params": job["params"], "metrics": result.get("metrics"),
               "error": result.get("error"), "worker": result.get("worker"),
               "seconds": result.get("seconds")}
        if job.get("options"):
            row["options"] = job["options"]
        rows[job["id"]] = row
        done += 1
        if progress is not None:
            progress(done, len(jobs), row)

    if jobs:
        run_local(strategy_path, jobs, workers=workers, evaluate=evaluate, history=history,
                  options=options, on_result=on_result, progress=progress)
    out = [r for r in rows if r is not None]
    failed = [r for r in out if r["error"]]
    if out and len(failed) == len(out) and failed[0]["error"].startswith("cannot load"):
        raise SweepError(failed[0]["error"])
    return out
