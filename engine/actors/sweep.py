"""Parameter sweeps over a pool of tractor actors, on this host and on any that join.

`run_sweep` evaluates every parameter combination of a grid with a pluggable evaluation
function, `evaluate(strategy_path, params, history_tokens, options) -> metrics`, named by
`module:function` so each worker actor imports it. The history is in shared memory once per
host: local workers attach the caller's segments read-only by token; a remote host (started with
`python -m engine.actors.sweep_host --registry HOST:PORT`) receives the rows once, keeps them in
its own segments and its workers attach those. Results come back as one row per combination,
in grid order; `rank`, `format_table`, `write_json` and `write_csv` present them.

Every link of a sweep is keyed (`engine.actors.sweep_auth`): a sweep on this host alone uses a
fresh random key; one across hosts needs the shared secret, links only hosts on its allow-list,
and trusts no remote result blindly: each must be plausible (the expected keys, finite numbers
or None, the caller's own checks), and a random sample of each host's jobs, its first always,
is evaluated again here and must agree. A host that fails either is dropped, and every result
it gave is run again elsewhere.

This module never computes metrics itself (beyond those re-evaluations) and never changes the
history.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trio

from engine.actors._runtime import (
    LINK_ERRORS,
    open_peer,
    parse_hostport,
    reap_children,
    registered_names,
    tractor,
    tractor_loglevel,
)
from engine.actors.pool import (
    JobQueue,
    Pool,
    SweepError,
    WorkerSpec,
    clean_metrics,
    default_workers,
    load_evaluate,
)
from engine.actors.sweep_auth import (
    AuthError,
    SecretError,
    allowed,
    derive_key,
    keyed,
    new_key,
)
from engine.actors.sweep_host import HEARTBEAT, HOST_PREFIX, SILENCE, serve_sweep
from engine.actors.sweep_jobs import DEFAULT_EVALUATE, make_jobs
from engine.actors.sweep_progress import ProgressBar
from engine.actors.sweep_shm import open_history
from engine.shm import ShmArray, ShmToken

__all__ = ["parse_grid", "run_sweep", "sweep", "open_history", "rank", "format_table",
           "write_json", "write_csv", "ProgressBar", "SweepError", "DEFAULT_EVALUATE",
           "default_workers"]

log = logging.getLogger("engine.actors.sweep")

# History travels to a remote host in messages of at most this many bytes.
CHUNK = 4 << 20

ProgressFn = Callable[[int, int, dict], None]
# Checks a remote result's metrics with the caller's knowledge (metrics, options): raises
# ValueError saying what is implausible.
CheckFn = Callable[[dict, dict], None]
# A share of each remote host's jobs (its first always) evaluated again on this host.
VERIFY_FRACTION = 0.1
# A remote result that would rank among this many best of its window is evaluated again here.
VERIFY_TOP = 3
# How often (seconds) a progress bar hears that time passed: several times per redraw.
REDRAW = 0.25
# Largest error text a remote host may send back (characters).
MAX_ERROR = 10_000
# Most worker slots one host may claim (each is a task here).
MAX_HOST_WORKERS = 1024
# Relative and absolute tolerance between a host's metric and the same one computed here
# (the same code on the same rows; different CPUs may round the last digits apart).
AGREE = 1e-7


# -- the grid -------------------------------------------------------------------------------


def _number(text: str) -> int | float | bool | str:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip()


def _axis(spec: str) -> tuple[str, list[Any]]:
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not name or not values.strip():
        raise ValueError(f"-p {spec!r}: expected name=start:stop:step, name=a,b,c or name=value")
    if ":" in values:
        parts = values.split(":")
        if len(parts) != 3:
            raise ValueError(f"-p {spec!r}: a range is start:stop:step, e.g. fast=5:50:5")
        nums = [_number(p) for p in parts]
        if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in nums):
            raise ValueError(f"-p {spec!r}: start, stop and step must be numbers")
        start, stop, step = nums
        if step <= 0:
            raise ValueError(f"-p {spec!r}: step must be positive")
        if stop < start:
            raise ValueError(f"-p {spec!r}: stop is below start")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if all(isinstance(n, int) for n in nums):
            return name, [start + i * step for i in range(count)]
        # Rounded so 0.1:0.3:0.1 gives 0.3, not 0.30000000000000004.
        return name, [round(start + i * step, 12) for i in range(count)]
    return name, [_number(v) for v in values.split(",") if v.strip()]


def parse_grid(specs: Sequence[str]) -> list[dict[str, Any]]:
    """Expand `name=start:stop:step` (stop included: `fast=5:50:5` is 5, 10, ..., 50),
    `name=a,b,c` and `name=value` specs into every combination, first spec varying slowest."""
    axes = [_axis(spec) for spec in specs]
    names = [name for name, _ in axes]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"parameter {name!r} is given twice")
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(values for _, values in axes))]


# -- history ---------------------------------------------------------------------------------


def _token(value: ShmArray | ShmToken | dict) -> dict[str, Any]:
    if isinstance(value, ShmArray):
        return value.token.model_dump()
    return ShmToken.from_any(value).model_dump()


# -- the sweep -------------------------------------------------------------------------------


def _row(job: dict, result: dict) -> dict[str, Any]:
    row = {"params": job["params"], "metrics": result.get("metrics"),
           "error": result.get("error"), "worker": result.get("worker"),
           "seconds": result.get("seconds")}
    if job.get("options"):
        row["options"] = job["options"]
    return row


class _Coordinator:
    def __init__(self, strategy_path: str, grid: list[dict], tokens: dict[str, dict],
                 evaluate: str, options: dict[str, Any], progress: ProgressFn | None,
                 job_options: Sequence[dict] | None = None, *, check: CheckFn | None = None,
                 verify_fraction: float = VERIFY_FRACTION, seed: int | None = None,
                 rank_by: tuple[str, bool] | None = None) -> None:
        self.strategy_path = strategy_path
        self.rank_by = rank_by
        # The VERIFY_TOP best values of `rank_by` so far, per set of job options (a window).
        self.top: dict[str, list[float]] = {}
        self.check = check
        self.verify_fraction = verify_fraction
        self.random = random.Random(seed)
        self.keys: frozenset[str] | None = None  # metric names, from a result computed here
        self.accepted: dict[str, list[dict]] = {}  # host -> jobs whose results were kept
        self.banned: set[str] = set()
        self.distrust: dict[str, str] = {}  # host -> why its results are not trusted
        self.strategy_source = Path(strategy_path).read_text()  # sent to remote hosts
        self.tokens = tokens
        self.evaluate = evaluate
        self.options = options
        self.progress = progress
        self.rows: list[dict | None] = [None] * len(grid)
        self.done = 0
        self.finished = trio.Event()
        self.queue = JobQueue(make_jobs(grid, job_options), on_result=self._on_result)
        self.hosts: dict[str, str] = {}  # registry name -> state
        self.joined = trio.Event()
        if not grid:
            self.finished.set()

    def _score(self, job: dict, result: dict) -> tuple[str, float] | None:
        """(group, value) of a result under `rank_by`, larger is better; None if unranked."""
        if self.rank_by is None or not isinstance(result.get("metrics"), dict):
            return None
        value = result["metrics"].get(self.rank_by[0])
        if not _finite(value):
            return None
        group = json.dumps(job.get("options") or {}, sort_keys=True, default=str)
        return group, (value if self.rank_by[1] else -value)

    def _would_rank(self, job: dict, result: dict) -> bool:
        score = self._score(job, result)
        if score is None:
            return False
        best = self.top.get(score[0], [])
        return len(best) < VERIFY_TOP or score[1] >= best[-1]

    def _on_result(self, job: dict, result: dict) -> None:
        score = self._score(job, result)
        if score is not None:
            best = self.top.setdefault(score[0], [])
            best.append(score[1])
            best.sort(reverse=True)
            del best[VERIFY_TOP:]
        self.rows[job["id"]] = row = _row(job, result)
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, len(self.rows), row)
        if self.done == len(self.rows):
            self.finished.set()

    # -- remote hosts ---------------------------------------------------------------------

    async def discover(self, registry: tuple[str, int], nursery: trio.Nursery) -> None:
        """Link every sweep host on the allow-list that registers, for as long as the sweep
        runs."""
        while not self.finished.is_set():
            try:
                names = await registered_names(registry)
            except (OSError, *LINK_ERRORS) as exc:
                log.warning("cannot read the registry at %s:%d: %s", *registry, exc)
                names = {}
            for name, (ip, port) in names.items():
                if not name.startswith(HOST_PREFIX) or name in self.hosts:
                    continue
                if name in self.banned:
                    continue
                if not allowed(ip):
                    self.hosts[name] = f"refused: {ip} is not on the allow-list"
                    log.warning("sweep host %s at %s:%d is not on the allow-list "
                                "(--allow-host); not linked", name, ip, port)
                    continue
                self.hosts[name] = "linking"
                nursery.start_soon(self.link_host, name)
            with trio.move_on_after(HEARTBEAT):
                await self.finished.wait()

    async def link_host(self, name: str) -> None:
        waiting: dict[int, list[Any]] = {}
        try:
            await self._link(name, waiting)
            self.hosts[name] = "done"
        except (OSError, SweepError, ExceptionGroup, *LINK_ERRORS) as exc:
            if name in self.distrust:
                self._ban(name, self.distrust[name], waiting)
                return
            self.hosts[name] = f"lost: {exc}"
            log.warning("sweep host %s lost (%s: %s)%s", name, type(exc).__name__, exc,
                        "; its jobs go back to the queue" if waiting else "")
        for job, _, result in waiting.values():
            if result is not None:
                self.queue.finish(job, result)
            else:
                self.queue.retry(job, f"host {name} was lost")
        if self.hosts[name] != "done":
            # Still registered a little later (it was starting, or came back)? Link it again.
            await trio.sleep(2.0)
            del self.hosts[name]

    def _ban(self, name: str, why: str, waiting: dict[int, list[Any]]) -> None:
        """Drop a host whose results cannot be trusted: never link it again, and run every
        job it answered (kept or not yet) again elsewhere."""
        self.banned.add(name)
        self.hosts[name] = f"refused: {why}"
        kept = self.accepted.pop(name, [])
        log.error("sweep host %s refused: %s; its %d result(s) are discarded and run again",
                  name, why, len(kept) + len(waiting))
        for job in kept:
            self.rows[job["id"]] = None
            self.done -= 1
            self.queue.reopen(job)
        for job, _, _ in waiting.values():
            self.queue.requeue(job)

    # -- trusting a remote result ---------------------------------------------------------

    async def accept(self, name: str, job: dict, msg: Any) -> dict:
        """`msg` as the result of `job` from host `name`; raise _Untrusted if it is not
        plausible or disagrees with the same job evaluated here."""
        try:
            result = _plausible(msg, job["id"], self.keys)
            if result["metrics"] is not None and self.check is not None:
                try:
                    self.check(result["metrics"], self._options(job))
                except ValueError as exc:
                    raise _Untrusted(f"implausible result for {job['params']}: {exc}") from None
            first = not self.accepted.get(name)
            # A result that would rank among the best so far is always checked, so the best
            # ones in the end were all checked (ranks only fall as results come in).
            if (first or self.keys is None or self._would_rank(job, result)
                    or self.random.random() < self.verify_fraction):
                why = _disagree(result, await self._evaluate_here(job))
                if why:
                    raise _Untrusted(f"its result for {job['params']} disagrees with this "
                                     f"host's ({why})")
        except _Untrusted as exc:
            self.distrust.setdefault(name, str(exc))
            raise
        self.accepted.setdefault(name, []).append(job)
        return result

    def _options(self, job: dict) -> dict:
        return {**self.options, **job["options"]} if job.get("options") else self.options

    async def _evaluate_here(self, job: dict) -> dict:
        fn = load_evaluate(self.evaluate)
        try:
            metrics = await trio.to_thread.run_sync(
                fn, self.strategy_path, job["params"], self.tokens, self._options(job))
            out = {"metrics": clean_metrics(metrics)}
            if self.keys is None:
                self.keys = frozenset(out["metrics"])
        except Exception as exc:  # noqa: BLE001 - a failing combination fails here too
            out = {"error": f"{type(exc).__name__}: {exc}"}
        return out

    async def _link(self, name: str, waiting: dict[int, list[Any]]) -> None:
        arrays = {sym: ShmArray.attach(token) for sym, token in self.tokens.items()}
        try:
            meta = {s: {"dtype_descr": a.token.dtype_descr, "rows": len(a)}
                    for s, a in arrays.items()}
            async with open_peer(name) as portal:
                if portal is None:
                    raise SweepError(f"{name} left the registry")
                async with portal.open_context(
                        serve_sweep, strategy_name=os.path.basename(self.strategy_path),
                        strategy_source=self.strategy_source,
                        evaluate=self.evaluate, options=self.options, history=meta,
                ) as (ctx, first):
                    if not isinstance(first, dict) or "error" in first:
                        raise SweepError(str(first.get("error") if isinstance(first, dict)
                                             else first)[:MAX_ERROR])
                    slots = first.get("workers")
                    if not isinstance(slots, int) or not 1 <= slots <= MAX_HOST_WORKERS:
                        raise SweepError(f"announced {slots!r} workers")
                    self.hosts[name] = f"{first['workers']} workers on {first['host']}"
                    self.joined.set()
                    log.info("sweep host %s joined: %s", name, self.hosts[name])
                    async with ctx.open_stream() as stream:
                        await _ship_history(stream, arrays)
                        await self._serve(name, stream, slots, waiting)
        finally:
            for shm in arrays.values():
                shm.close()

    async def _serve(self, name: str, stream: Any, slots: int, waiting: dict[int, list[Any]]
                     ) -> None:
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while True:
                    with trio.move_on_after(SILENCE) as quiet:
                        msg = await stream.receive()
                    if quiet.cancelled_caught:
                        raise SweepError(f"silent for {SILENCE:g} s")
                    if not isinstance(msg, dict):
                        raise _Untrusted(f"sent a {type(msg).__name__} instead of a result")
                    mid = msg.get("id")
                    entry = waiting.get(mid) if isinstance(mid, int) else None
                    if entry is not None and entry[2] is None:
                        entry[2] = msg
                        entry[1].set()

            async def beat() -> None:
                while True:
                    await trio.sleep(HEARTBEAT)
                    await stream.send({})

            async def slot() -> None:
                while (job := await self.queue.get()) is not None:
                    entry = waiting[job["id"]] = [job, trio.Event(), None]
                    await stream.send({"job": job})
                    await entry[1].wait()
                    result = await self.accept(name, job, entry[2])
                    del waiting[job["id"]]
                    self.queue.finish(job, result)

            nursery.start_soon(read)
            nursery.start_soon(beat)
            async with trio.open_nursery() as workers:
                for _ in range(slots):
                    workers.start_soon(slot)
            nursery.cancel_scope.cancel()


class _Untrusted(SweepError):
    """A remote host sent a result that is implausible or disagrees with this host's."""


_RESULT_FIELDS = frozenset({"id", "metrics", "error", "seconds", "worker"})


def _plausible(msg: Any, job_id: int, keys: frozenset[str] | None) -> dict[str, Any]:
    """A remote result, checked field by field: raise _Untrusted saying what is wrong."""
    if not isinstance(msg, dict) or not set(msg) <= _RESULT_FIELDS:
        extra = sorted(map(str, set(msg) - _RESULT_FIELDS)) if isinstance(msg, dict) else msg
        raise _Untrusted(f"a result with unexpected fields {extra!r:.200}")
    if msg.get("id") != job_id:
        raise _Untrusted(f"a result for job {msg.get('id')!r:.40} instead of {job_id}")
    metrics, error = msg.get("metrics"), msg.get("error")
    if (metrics is None) == (error is None):
        raise _Untrusted("a result with neither metrics nor error, or both")
    if error is not None and (not isinstance(error, str) or len(error) > MAX_ERROR):
        raise _Untrusted("an error that is not a text of reasonable length")
    if metrics is not None:
        if not isinstance(metrics, dict):
            raise _Untrusted("metrics that are not a mapping")
        for k, v in metrics.items():
            if not isinstance(k, str) or not (v is None or _finite(v)):
                raise _Untrusted(f"metric {k!r:.60} = {v!r:.60} (not a finite number or None)")
        if keys is not None and set(metrics) != keys:
            missing, extra = sorted(keys - set(metrics)), sorted(set(metrics) - keys)
            raise _Untrusted(f"metrics missing {missing} and unexpected {extra}"[:300])
    seconds, worker = msg.get("seconds"), msg.get("worker")
    if seconds is not None and not (_finite(seconds) and seconds >= 0):
        raise _Untrusted(f"a duration of {seconds!r:.40} seconds")
    if worker is not None and not (isinstance(worker, str) and len(worker) <= 200):
        raise _Untrusted("a worker name that is not a short text")
    return {"id": job_id, "metrics": dict(metrics) if metrics is not None else None,
            "error": error, "seconds": seconds, "worker": worker}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _disagree(theirs: dict, mine: dict) -> str | None:
    """Why a remote result differs from the same job evaluated here (None: it agrees)."""
    if mine.get("error") is not None:
        if theirs["error"] is None:
            return f"this host's run failed: {mine['error']:.200}"
        same = theirs["error"].split(":", 1)[0] == mine["error"].split(":", 1)[0]
        return None if same else f"error {theirs['error']:.100} against {mine['error']:.100}"
    if theirs["error"] is not None:
        return f"it failed ({theirs['error']:.200}) where this host's run did not"
    ours, got = mine["metrics"], theirs["metrics"]
    if set(ours) != set(got):
        return f"metrics {sorted(got)} against {sorted(ours)}"[:300]
    for k, v in ours.items():
        w = got[k]
        if (v is None) != (w is None) or (
                v is not None and not math.isclose(v, w, rel_tol=AGREE, abs_tol=AGREE)):
            return f"{k} {w!r} against {v!r}"
    return None


async def _ship_history(stream: Any, arrays: Mapping[str, ShmArray]) -> None:
    for sym, shm in arrays.items():
        rows = np.ascontiguousarray(shm.array)
        raw = memoryview(rows.view(np.uint8).reshape(-1)) if len(rows) else memoryview(b"")
        step = max(1, CHUNK // rows.dtype.itemsize) * rows.dtype.itemsize
        for offset in range(0, len(raw), step):
            await stream.send({"history": sym, "data": bytes(raw[offset:offset + step])})
    await stream.send({"history_done": True})


def _absolute(path: str | Path) -> str:
    return str(Path(path).resolve())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_sweep(
    strategy_path: str | Path,
    grid: Sequence[dict[str, Any]],
    history: Mapping[str, ShmArray | ShmToken | dict],
    *,
    workers: int | None = None,
    evaluate: str = DEFAULT_EVALUATE,
    options: dict[str, Any] | None = None,
    registry: str | tuple[str, int] | None = None,
    hosts: int = 0,
    host_timeout: float = 60.0,
    progress: ProgressFn | None = None,
    job_options: Sequence[dict] | None = None,
    secret: bytes | None = None,
    allow_hosts: Sequence[str] = (),
    check: CheckFn | None = None,
    verify_fraction: float = VERIFY_FRACTION,
    seed: int | None = None,
    rank_by: str | None = None,
    descending: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate `strategy_path` on every parameter combination of `grid`; return one row per
    combination, in grid order: `{"params", "metrics", "error", "worker", "seconds"}`.

    `history` maps each symbol to its rows in shared memory (a `ShmArray` or its token):
    workers attach them read-only, nothing is copied on this host. `workers` local worker
    actors (default: one per core; 0: remote hosts only). With `registry` (`HOST:PORT`, an
    address of this host that the others reach), sweep hosts registered there also take jobs;
    `hosts` makes the sweep wait up to `host_timeout` seconds for that many before starting.
    A sweep across hosts needs `secret` (the shared secret, `sweep_auth.load_secret`) and links
    only hosts at loopback addresses, the registry's own, or in `allow_hosts` (addresses,
    networks or names); each remote result must pass `check(metrics, options)` (raising
    ValueError when implausible), and some are evaluated again here and must agree: each
    host's first, every one that would rank among the VERIFY_TOP best of its window by metric
    `rank_by` (`descending`: larger is better) when it comes in, and a share `verify_fraction`
    of the rest (drawn with `seed`). A host that fails is dropped and its jobs run elsewhere.
    `evaluate` names the evaluation function (`module:function` or `file.py:function`);
    `options` go to it unchanged; `job_options`, one dict per combination, are merged over them
    for that combination alone (and kept in its row as `options`), so one pool can evaluate the
    same grid on several windows. `progress(done, total, row)` hears each result.
    """
    strategy_path = _absolute(strategy_path)
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise SweepError(f"workers must be 0 or more, got {workers}")
    if workers == 0 and registry is None:
        raise SweepError("no workers: give workers >= 1, or a registry that sweep hosts join")
    if registry is not None and secret is None:
        raise SweepError("a sweep across hosts needs the shared secret: set "
                         "ENGINE_SWEEP_SECRET or give a secret file (see the README)")
    if registry is not None or workers:
        # A wrong name fails here, once; remote results are checked against it.
        load_evaluate(evaluate)
    tokens = {sym: _token(h) for sym, h in history.items()}
    coord = _Coordinator(strategy_path, list(grid), tokens, evaluate, dict(options or {}),
                         progress, job_options, check=check, verify_fraction=verify_fraction,
                         seed=seed, rank_by=(rank_by, descending) if rank_by else None)
    addr = parse_hostport(registry) if registry is not None else ("127.0.0.1", _free_port())
    key = derive_key(secret) if secret is not None else new_key()
    try:
        with keyed(key, allow=[addr[0], *allow_hosts]):
            await _run(coord, addr, workers, registry is not None, hosts, host_timeout,
                       WorkerSpec(evaluate, strategy_path, tokens, dict(options or {})))
    except SecretError as exc:  # an allowed host name that does not resolve
        raise SweepError(str(exc)) from None
    rows = [row for row in coord.rows if row is not None]
    failed = [r for r in rows if r["error"]]
    if rows and len(failed) == len(rows) and failed[0]["error"].startswith("cannot load"):
        raise SweepError(failed[0]["error"])
    return rows


async def _run(coord: _Coordinator, addr: tuple[str, int], workers: int, remote: bool,
               hosts: int, host_timeout: float, spec: WorkerSpec) -> None:
    try:
        async with tractor.open_nursery(arbiter_addr=addr, name=f"sweep.{os.getpid()}",
                                        loglevel=tractor_loglevel()) as an:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_redraw, coord.progress, len(coord.rows))
                if remote:
                    nursery.start_soon(coord.discover, addr, nursery)
                    if hosts or not workers:
                        await _wait_hosts(coord, max(hosts, 1), host_timeout)
                if workers:
                    nursery.start_soon(Pool(an, workers).run, spec, coord.queue)
                await coord.finished.wait()
                nursery.cancel_scope.cancel()
            await an.cancel()
            await reap_children(an)
    except AuthError as exc:  # e.g. another keyed actor already holds the registry address
        raise SweepError(f"the registry address {addr[0]}:{addr[1]} is taken by an actor "
                         f"that does not share our key ({exc})") from None
    finally:
        if hasattr(coord.progress, "close"):
            coord.progress.close()


async def _redraw(progress: Any, total: int) -> None:
    """Keep a progress bar moving between results (it redraws when its line is due)."""
    if hasattr(progress, "begin"):
        progress.begin(total)
    refresh = getattr(progress, "refresh", None)
    while refresh is not None:
        await trio.sleep(REDRAW)
        refresh()


async def _wait_hosts(coord: _Coordinator, count: int, timeout: float) -> None:
    with trio.move_on_after(timeout):
        while sum(1 for s in coord.hosts.values() if "workers on" in s) < count:
            coord.joined = trio.Event()
            await coord.joined.wait()
        return
    joined = sum(1 for s in coord.hosts.values() if "workers on" in s)
    raise SweepError(f"{joined} of {count} sweep host(s) joined within {timeout:g} s")


def sweep(strategy_path: str | Path, grid: Sequence[dict[str, Any]],
          history: Mapping[str, ShmArray | ShmToken | dict], **kwargs: Any
          ) -> list[dict[str, Any]]:
    """`run_sweep` from synchronous code: see its arguments."""
    return trio.run(lambda: run_sweep(strategy_path, grid, history, **kwargs))


# -- presenting results ----------------------------------------------------------------------


def rank(rows: Sequence[dict[str, Any]], metric: str = "sharpe", *,
         descending: bool = True) -> list[dict[str, Any]]:
    """Rows that have `metric`, best first (NaN last); failed rows are left out."""
    def key(row: dict) -> float:
        value = (row.get("metrics") or {}).get(metric)
        if not isinstance(value, int | float) or math.isnan(value):
            return math.inf
        return -value if descending else value

    ok = [r for r in rows if not r.get("error") and metric in (r.get("metrics") or {})]
    return sorted(ok, key=key)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], metric: str = "sharpe", *, top: int = 20,
                 descending: bool = True) -> str:
    """A ranked text table of the best `top` combinations, plus a line per failure kind."""
    ranked = rank(rows, metric, descending=descending)[:top]
    lines = []
    if ranked:
        params = list(ranked[0]["params"])
        others = [k for k in ranked[0]["metrics"] if k != metric][:6]
        head = ["rank", *params, metric, *others]
        body = [[str(i), *(_cell(r["params"][p]) for p in params),
                 *(_cell(r["metrics"].get(k)) for k in (metric, *others))]
                for i, r in enumerate(ranked, 1)]
        widths = [max(len(h), *(len(b[c]) for b in body)) for c, h in enumerate(head)]
        lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
        lines.extend("  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body)
    else:
        lines.append(f"no combination produced {metric!r}")
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines.append(f"{len(failed)} of {len(rows)} combinations failed; first: "
                     f"{failed[0]['params']}: {failed[0]['error'].splitlines()[-1]}")
    return "\n".join(lines)


def write_json(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write every row (params, metrics, error, worker, seconds) as a JSON list."""
    Path(path).write_text(json.dumps(list(rows), indent=1, default=float))


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write one CSV line per combination: its own options (a walk-forward window's bounds),
    its parameters, its metrics, error, worker, seconds."""
    params = list(dict.fromkeys(k for r in rows for k in r["params"]))
    metrics = list(dict.fromkeys(k for r in rows for k in (r.get("metrics") or {})))
    extra = list(dict.fromkeys(k for r in rows for k in (r.get("options") or {})))
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*extra, *params, *metrics, "error", "worker", "seconds"])
        for r in rows:
            m = r.get("metrics") or {}
            o = r.get("options") or {}
            out.writerow([*(o.get(k, "") for k in extra), *(r["params"].get(p, "") for p in params),
                          *(m.get(k, "") for k in metrics), r.get("error") or "",
                          r.get("worker") or "", f"{r['seconds']:.6f}" if r.get("seconds")
                          is not None else ""])
