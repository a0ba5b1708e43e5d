"""The sweep's worker pool: evaluation actors on one host, fed from a shared job queue.

A worker actor runs `serve_worker`: it loads the evaluation function by its `module:function`
(or `path/to/file.py:function`) name, then takes jobs (`{"id", "params"}`) over a tractor stream
and answers each with `{"id", "metrics", "seconds", "worker"}` or `{"id", "error", ...}`. Every
worker gets the same history tokens and attaches the same segments read-only: history is in
shared memory once per host. `Pool` keeps the worker processes, pulls jobs from a `JobQueue`,
and puts a job back when its worker dies (a dead worker is replaced). Nothing here knows what
the evaluation computes.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from engine.actors._runtime import LINK_ERRORS, child_process, describe_exit, guard_child, tractor
from engine.actors.sweep_jobs import SweepError, clean_metrics, default_workers, load_evaluate

__all__ = ["load_evaluate", "serve_worker", "JobQueue", "WorkerSpec", "Pool", "SweepError",
           "default_workers", "clean_metrics"]

log = logging.getLogger("engine.actors.sweep")

# A job whose worker died this many times is reported as failed instead of tried again.
MAX_ATTEMPTS = 3
# A worker slot replaces its dead worker process at most this many times.
MAX_RESPAWNS = 3


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker of one sweep needs: the evaluation function's name, the strategy file
    (a path on the worker's host), the history tokens (segments on that host) and options."""

    evaluate: str
    strategy_path: str
    history: dict[str, dict]
    options: dict[str, Any]


@tractor.context
async def serve_worker(ctx: Any, evaluate: str, strategy_path: str, history: dict[str, dict],
                       options: dict[str, Any]) -> None:
    """Evaluate jobs from the stream until it closes (one job at a time, in a thread so this
    actor stays responsive to cancellation)."""
    async with trio.open_nursery() as guard:
        guard_child(guard)
        try:
            fn = load_evaluate(evaluate)
        except Exception as exc:  # noqa: BLE001 - a bad name or an import error: say which
            await ctx.started({"error": f"cannot load evaluate function {evaluate!r}: "
                                        f"{type(exc).__name__}: {exc}"})
            guard.cancel_scope.cancel()
            return
        worker = f"{socket.gethostname()}:{os.getpid()}"
        await ctx.started({"worker": worker})
        is_async = inspect.iscoroutinefunction(fn)
        async with ctx.open_stream() as stream:
            async for job in stream:
                t0 = time.perf_counter()
                # A job may carry options of its own (a walk-forward window's bounds).
                opts = {**options, **job["options"]} if job.get("options") else options
                try:
                    if is_async:
                        metrics = await fn(strategy_path, job["params"], history, opts)
                    else:
                        metrics = await trio.to_thread.run_sync(
                            fn, strategy_path, job["params"], history, opts,
                            abandon_on_cancel=True)
                    out = {"id": job["id"], "metrics": clean_metrics(metrics)}
                except Exception as exc:  # noqa: BLE001 - one bad combination fails alone
                    out = {"id": job["id"], "error": f"{type(exc).__name__}: {exc}"}
                out.update(seconds=time.perf_counter() - t0, worker=worker)
                await stream.send(out)
        guard.cancel_scope.cancel()


class JobQueue:
    """Jobs waiting for a worker, shared by every worker slot (local or remote).

    `get` hands out a job, or None once the queue is closed, empty and nothing is in flight
    (a job in flight may still come back when its worker dies). `finish` records a result
    and calls `on_result(job, result)`; `retry` puts a job back, up to MAX_ATTEMPTS.
    """

    def __init__(self, jobs: list[dict] | None = None, *, closed: bool = True,
                 on_result: Callable[[dict, dict], None] | None = None) -> None:
        self.pending: deque[dict] = deque(jobs or [])
        self.closed = closed
        self.in_flight = 0
        self.attempts: dict[Any, int] = {}
        self.on_result = on_result
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def put(self, job: dict) -> None:
        self.pending.append(job)
        self._notify()

    def close(self) -> None:
        self.closed = True
        self._notify()

    async def get(self) -> dict | None:
        while True:
            if self.pending:
                self.in_flight += 1
                return self.pending.popleft()
            if self.closed and self.in_flight == 0:
                return None
            await self._changed.wait()

    def finish(self, job: dict, result: dict) -> None:
        self.in_flight -= 1
        if self.on_result is not None:
            self.on_result(job, result)
        self._notify()

    def requeue(self, job: dict) -> None:
        """Put a job in flight back at the front, without counting an attempt (its host was
        dropped, not the job's fault)."""
        self.in_flight -= 1
        self.pending.appendleft(job)
        self._notify()

    def reopen(self, job: dict) -> None:
        """Put a finished job back (its result was discarded)."""
        self.pending.append(job)
        self._notify()

    def retry(self, job: dict, why: str) -> None:
        self.attempts[job["id"]] = self.attempts.get(job["id"], 0) + 1
        if self.attempts[job["id"]] >= MAX_ATTEMPTS:
            self.finish(job, {"id": job["id"], "error": f"gave up after {MAX_ATTEMPTS} "
                                                        f"attempts; last: {why}"})
            return
        self.in_flight -= 1
        self.pending.appendleft(job)
        self._notify()


class Pool:
    """`size` worker actors on this host (spawned once, reused by successive sweeps)."""

    def __init__(self, an: Any, size: int, *, name: str = "sweep.worker") -> None:
        self.an = an
        self.size = size
        self.name = f"{name}.{os.getpid()}"
        self.portals: list[Any] = []
        self._spawned = 0

    async def _spawn_one(self) -> Any:
        self._spawned += 1
        return await self.an.start_actor(f"{self.name}.{self._spawned}",
                                         enable_modules=["engine.actors.pool"])

    async def spawn(self) -> None:
        """Start the worker processes at once (their imports overlap)."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.size - len(self.portals)):

                async def one() -> None:
                    self.portals.append(await self._spawn_one())

                nursery.start_soon(one)

    async def run(self, spec: WorkerSpec, queue: JobQueue) -> list[str]:
        """Work the queue with every worker until `queue.get` says there is nothing left;
        return the workers' start-up errors (a function that does not load fails every job)."""
        await self.spawn()
        errors: list[str] = []
        async with trio.open_nursery() as nursery:
            for i in range(len(self.portals)):
                nursery.start_soon(self._slot, i, spec, queue, errors)
        return errors

    async def _slot(self, index: int, spec: WorkerSpec, queue: JobQueue, errors: list[str]
                    ) -> None:
        respawns = 0
        while True:
            portal = self.portals[index]
            job, outcome = await self._work(portal, spec, queue, errors)
            if outcome == "done":
                return
            if job is not None:
                queue.retry(job, outcome)
            log.warning("sweep worker %s: %s; %s", index, outcome,
                        "replacing it" if respawns < MAX_RESPAWNS else "giving up on it")
            if respawns >= MAX_RESPAWNS:
                return
            respawns += 1
            self.portals[index] = await self._spawn_one()

    async def _work(self, portal: Any, spec: WorkerSpec, queue: JobQueue, errors: list[str]
                    ) -> tuple[dict | None, str]:
        proc = child_process(self.an, portal)
        job: dict | None = None
        died: list[int] = []
        outcome = "done"
        async with trio.open_nursery() as nursery:
            if proc is not None:
                async def watch() -> None:
                    died.append(await proc.wait())
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
            try:
                async with portal.open_context(
                        serve_worker, evaluate=spec.evaluate, strategy_path=spec.strategy_path,
                        history=spec.history, options=spec.options) as (ctx, first):
                    if "error" in first:
                        errors.append(first["error"])
                        # No worker can run this sweep: drain the queue with the error.
                        while (job := await queue.get()) is not None:
                            queue.finish(job, {"id": job["id"], "error": first["error"]})
                        job = None
                    else:
                        async with ctx.open_stream() as stream:
                            while (job := await queue.get()) is not None:
                                await stream.send(job)
                                result = await stream.receive()
                                queue.finish(job, result)
                                job = None
            except LINK_ERRORS as exc:
                outcome = f"lost its worker ({type(exc).__name__})"
            nursery.cancel_scope.cancel()
        if died:
            outcome = f"its worker process {describe_exit(died[0])}"
        return job, outcome
