"""A sweep host: worker actors on another machine that join a sweep coordinator's registry.

Run on each extra host (it waits for sweeps and serves one after another until Ctrl-C), with
the sweep's shared secret in a 0600 file or in the environment (never on the command line):

    python -m engine.actors.sweep_host --registry COORDINATOR:1616 --bind THIS_HOST \
        --secret-file ~/.engine/sweep.secret [--workers N]

The host runs its own tractor registry at `--bind` (default 127.0.0.1:1616: loopback unless
told otherwise) for its workers, and registers itself in the coordinator's registry as
`sweep.host.<hostname>.<pid>`, again whenever that registry comes back. Every connection, in
and out, first proves the shared secret both ways (`engine.actors.sweep_auth`); a peer that
cannot is refused and logged before anything it sends is read. For each sweep the
coordinator sends the strategy file's text and the history rows once; the host keeps the rows in
its own shared memory, its workers attach them read-only, and it relays jobs and results.
The evaluation function must be importable on this host too.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio

from engine.actors._runtime import (
    LINK_ERRORS,
    open_registry,
    parse_hostport,
    reap_children,
    registered_names,
    tractor,
    tractor_loglevel,
)
from engine.actors.pool import JobQueue, Pool, WorkerSpec, default_workers
from engine.actors.sweep_auth import (
    DEFAULT_SECRET_ENV,
    AuthError,
    SecretError,
    derive_key,
    is_authenticated,
    keyed,
    load_secret,
)
from engine.shm import ShmArray, ShmToken

__all__ = ["serve_host", "serve_sweep", "main"]

log = logging.getLogger("engine.actors.sweep")

# A sweep host registers in the coordinator's registry under this prefix.
HOST_PREFIX = "sweep.host."
# Both ends of a host link send something at least this often (seconds) ...
HEARTBEAT = 0.5
# ... and give the other up after this much silence (seconds).
SILENCE = 10.0


@dataclass
class _Host:
    pool: Pool
    lock: trio.Lock


_host: _Host | None = None


@tractor.context
async def serve_sweep(ctx: Any, strategy_name: str, strategy_source: str, evaluate: str,
                      options: dict[str, Any], history: dict[str, dict]) -> None:
    """Serve one sweep: take the history rows once, then relay jobs to this host's workers
    and results back until the coordinator closes the stream."""
    host = _host
    if not is_authenticated(ctx.chan):
        # Never reached through a keyed host (every link proves the key first): a guard
        # against this function being served some other way.
        log.error("refused a sweep from %s: the link is not authenticated", ctx.chan.raddr)
        await ctx.started({"error": "refused: the link is not authenticated"})
        return
    if host is None:
        await ctx.started({"error": "this sweep host is still starting"})
        return
    async with host.lock:  # one sweep at a time: the workers are this host's cores
        tmp = Path(tempfile.mkdtemp(prefix="engine-sweep-"))
        arrays: dict[str, ShmArray] = {}
        try:
            path = tmp / Path(strategy_name).name
            path.write_text(strategy_source)
            for sym, meta in history.items():
                dtype = ShmToken(name="-", dtype_descr=meta["dtype_descr"], size=1).dtype
                arrays[sym] = ShmArray.create(dtype, max(1, int(meta["rows"])), start=0)
            await ctx.started({"workers": host.pool.size, "host": socket.gethostname(),
                               "pid": os.getpid()})
            async with ctx.open_stream() as stream:
                await _take_history(stream, arrays)
                tokens = {s: a.token.model_dump() for s, a in arrays.items()}
                await _relay(stream, host.pool, WorkerSpec(evaluate, str(path), tokens, options))
        finally:
            for shm in arrays.values():
                shm.close()
                shm.unlink()
            shutil.rmtree(tmp, ignore_errors=True)


async def _take_history(stream: Any, arrays: dict[str, ShmArray]) -> None:
    while True:
        msg = await stream.receive()
        if msg.get("history_done"):
            return
        if "history" in msg:
            shm = arrays[msg["history"]]
            shm.push(np.frombuffer(msg["data"], dtype=shm.dtype))


async def _relay(stream: Any, pool: Pool, spec: WorkerSpec) -> None:
    send, recv = trio.open_memory_channel(math.inf)
    queue = JobQueue(closed=False, on_result=lambda job, result: send.send_nowait(result))
    async with trio.open_nursery() as nursery:

        async def take_jobs() -> None:
            try:
                while True:
                    with trio.move_on_after(SILENCE) as quiet:
                        msg = await stream.receive()
                    if quiet.cancelled_caught:
                        log.warning("the sweep coordinator went silent; dropping its jobs")
                        queue.pending.clear()
                        break
                    if "job" in msg:
                        queue.put(msg["job"])
            except (trio.EndOfChannel, *LINK_ERRORS):
                pass
            queue.close()

        async def send_results() -> None:
            async with recv:
                async for result in recv:
                    await stream.send(result)

        async def beat() -> None:
            while True:
                await trio.sleep(HEARTBEAT)
                await stream.send({})

        nursery.start_soon(take_jobs)
        nursery.start_soon(beat)
        async with trio.open_nursery() as results:
            results.start_soon(send_results)
            await pool.run(spec, queue)
            send.close()  # the sender drains what is left, then ends
        nursery.cancel_scope.cancel()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


async def _stay_registered(registry: tuple[str, int], name: str) -> None:
    actor = tractor.current_actor()
    joined = refused = False
    while True:
        try:
            names = await registered_names(registry)
            if name not in names:
                async with open_registry(registry) as portal:
                    await portal.run_from_ns("self", "register_actor", uid=actor.uid,
                                             sockaddr=actor.accept_addr)
                log.info("joined the registry at %s:%d as %s", *registry, name)
                joined, refused = True, False
        except AuthError as exc:
            if not refused:
                log.warning("the registry at %s:%d refused our key (%s); is the secret the "
                            "same on both hosts?", *registry, exc)
            refused, joined = True, False
        except Exception as exc:  # noqa: BLE001 - a registry coming or going never stops us
            if joined:
                log.info("the registry at %s:%d is gone (%s); waiting for the next one",
                         *registry, type(exc).__name__)
                joined = False
        await trio.sleep(1.0)


async def serve_host(registry: str | tuple[str, int], *, secret: bytes,
                     bind: str = "127.0.0.1", port: int = 1616, workers: int | None = None,
                     allow_hosts: Sequence[str] = ()) -> None:
    """Serve sweeps from the coordinator registry `registry` until cancelled, with `workers`
    worker actors (default: one per core) under this host's own registry at `bind:port`.
    Every link proves `secret` (`sweep_auth.load_secret`) both ways; connections are taken
    only from loopback, the registry's host and `allow_hosts`."""
    global _host
    registry = parse_hostport(registry)
    name = f"{HOST_PREFIX}{socket.gethostname()}.{os.getpid()}"
    with keyed(derive_key(secret), allow=[registry[0], *allow_hosts]):
        async with tractor.open_root_actor(arbiter_addr=(bind, port), name=name,
                                           enable_modules=["engine.actors.sweep_host"],
                                           loglevel=tractor_loglevel()):
            async with tractor.open_nursery() as an:
                pool = Pool(an, workers or default_workers())
                await pool.spawn()
                _host = _Host(pool, trio.Lock())
                log.info("sweep host %s ready: %d workers, own registry %s:%d", name,
                         pool.size, bind, port)
                try:
                    await _stay_registered(registry, name)
                finally:
                    _host = None
                    with trio.move_on_after(0.5) as cs:
                        cs.shield = True
                        try:
                            async with open_registry(registry) as portal:
                                await portal.run_from_ns("self", "unregister_actor",
                                                         uid=tractor.current_actor().uid)
                        except (OSError, KeyError, *LINK_ERRORS):
                            pass
                    await an.cancel()
                    await reap_children(an)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.actors.sweep_host",
        description="Serve parameter sweeps from another host's registry with this host's cores.")
    parser.add_argument("--registry", required=True, metavar="HOST:PORT",
                        help="the sweep coordinator's registry (engine sweep --registry)")
    parser.add_argument("--bind", metavar="HOST[:PORT]",
                        help="this host's address the coordinator reaches, and its own registry "
                             "port (default 127.0.0.1:1616; required when the registry is on "
                             "another machine)")
    parser.add_argument("--workers", type=int, help="worker actors (default: one per core)")
    parser.add_argument("--secret-file", metavar="PATH",
                        help="the sweep's shared secret, in a file of mode 0600")
    parser.add_argument("--secret-env", metavar="NAME",
                        help=f"the environment variable holding the shared secret (default "
                             f"{DEFAULT_SECRET_ENV})")
    parser.add_argument("--allow-host", action="append", default=[], metavar="ADDR",
                        help="also take connections from this address, network or name "
                             "(besides loopback and the registry's host; repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname).1s %(name)s: %(message)s")
    try:
        registry = parse_hostport(args.registry)
        bind = parse_hostport(args.bind, default=("127.0.0.1", 1616)) if args.bind else None
        if bind is None and not _is_loopback(registry[0]):
            raise ValueError(f"the registry {registry[0]} is on another machine: give --bind "
                             "with this host's address that it reaches")
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be 1 or more, got {args.workers}")
        secret = load_secret(file=args.secret_file, env=args.secret_env)
    except (ValueError, SecretError) as exc:
        parser.exit(2, f"error: {exc}\n")
    bind = bind or ("127.0.0.1", 1616)

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def stop() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(stop)
                await serve_host(registry, secret=secret, bind=bind[0], port=bind[1],
                                 workers=args.workers, allow_hosts=args.allow_host)

    try:
        trio.run(run)
    except (AuthError, SecretError) as exc:
        parser.exit(1, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    # Serve from the module tractor imports for RPC, not from this `__main__` copy of it.
    from engine.actors.sweep_host import main as _main

    sys.exit(_main())
