"""Glue between the engine and tractor 0.1.0a5: quiet import, addresses, child-process hygiene.

Every module of `engine.actors` imports tractor from here, so every child actor the engine
starts goes through `engine.actors._boot` (which watches the parent from process start). This
module knows nothing of feeds, strategies or brokers; it never starts an actor itself.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

# tractor 0.1.0a5 touches trio.MultiError, which trio 0.23 deprecates: one warning per import
# and per cancellation, in every actor. Children inherit the filter through the environment.
_FILTERS = ("ignore:trio.MultiError is deprecated", "ignore:MultiError.filter() is deprecated")
warnings.filterwarnings("ignore", message=r"(trio\.)?MultiError(\.filter\(\))? is deprecated",
                        category=FutureWarning)
_env = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
os.environ["PYTHONWARNINGS"] = ",".join(_env + [f for f in _FILTERS if f not in _env])

import tractor  # noqa: E402
import tractor._spawn  # noqa: E402
from tractor._exceptions import TransportClosed  # noqa: E402

from engine.actors.exits import describe_exit  # noqa: E402

__all__ = ["tractor", "DEFAULT_REGISTRY", "parse_hostport", "tractor_loglevel", "guard_child",
           "child_process", "LINK_ERRORS", "describe_exit", "TransportClosed", "open_registry",
           "open_peer", "registered_names", "reap_children"]

log = logging.getLogger("engine.actors")

# tractor's own default registry ("arbiter") address.
DEFAULT_REGISTRY = ("127.0.0.1", 1616)

# What a broken or cancelled link to another actor raises on our side.
LINK_ERRORS: tuple[type[BaseException], ...] = (
    tractor.RemoteActorError, tractor.ContextCancelled, trio.BrokenResourceError,
    trio.ClosedResourceError, trio.EndOfChannel, OSError,
)


def parse_hostport(text: str | tuple[str, int] | None,
                   default: tuple[str, int] = DEFAULT_REGISTRY) -> tuple[str, int]:
    """Parse `HOST:PORT` (or `HOST`, or `:PORT`) into an address; raise ValueError if bad."""
    if text is None:
        return default
    if isinstance(text, tuple):
        return str(text[0]), int(text[1])
    host, sep, port = str(text).strip().rpartition(":")
    if not sep:
        host, port = port, str(default[1])
    host = host.strip("[]") or default[0]
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1616") from None
    if not 0 < number < 65536:
        raise ValueError(f"bad address {text!r}: port must be 1..65535")
    return host, number


def tractor_loglevel() -> str:
    """tractor's console log level: quiet unless ENGINE_TRACTOR_LOGLEVEL says otherwise (the
    engine reports actor failures itself, with the strategy's own traceback lines)."""
    return os.environ.get("ENGINE_TRACTOR_LOGLEVEL", "critical")


logging.getLogger("tractor").setLevel(tractor_loglevel().upper())


# The pipe whose read end every child of this process watches (`engine.actors._boot`): the
# write end stays open, unwritten and out of every child, for as long as this process lives.
_lifeline: tuple[int, int] | None = None


def _lifeline_fd() -> int:
    global _lifeline
    if _lifeline is None:
        _lifeline = os.pipe()  # both ends close-on-exec; a child gets the read end by pass_fds
    return _lifeline[0]


async def _open_actor_process(command: list[str], **options: Any) -> trio.Process:
    # tractor 0.1.0a5 hard-codes `python -m tractor._child ...`: start it through the boot module.
    if list(command[1:3]) == ["-m", "tractor._child"]:
        fd = _lifeline_fd()
        command = [command[0], "-m", "engine.actors._boot", "--parent-fd", str(fd), *command[3:]]
        options["pass_fds"] = (*options.get("pass_fds", ()), fd)
    return await trio.lowlevel.open_process(command, **options)


class _SpawnTrio:
    """trio as `tractor._spawn` sees it: the same but for how a child process starts."""

    def __init__(self) -> None:
        self.lowlevel = _SpawnLowlevel()

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)


class _SpawnLowlevel:
    open_process = staticmethod(_open_actor_process)

    def __getattr__(self, name: str) -> Any:
        return getattr(trio.lowlevel, name)


tractor._spawn.trio = _SpawnTrio()  # type: ignore[assignment]


_guarded = False


async def _watch_sigterm() -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            tractor.current_actor().cancel_soon()
            return


def guard_child(nursery: trio.Nursery) -> None:
    """Make this child actor process behave: ignore SIGINT (the root turns Ctrl-C into an
    orderly teardown of the whole tree) and stop cleanly on SIGTERM, which is also what its
    boot thread sends when the parent dies (`engine.actors._boot`). Call from the actor's
    entry context; later calls and calls in the root do nothing. The watcher lives in the
    actor's own service nursery (as long as the process), or in `nursery` if the runtime has
    none."""
    global _guarded
    if _guarded or tractor.is_root_process():
        return
    _guarded = True
    service = getattr(tractor.current_actor(), "_service_n", None) or nursery
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        service.start_soon(_watch_sigterm)


def child_process(nursery: Any, portal: Any) -> trio.Process | None:
    """The `trio.Process` of a child actor, to watch it die (tractor 0.1.0a5 does not tell
    open contexts when a peer's process dies; it keeps (actor, process, portal) per child)."""
    entry = getattr(nursery, "_children", {}).get(portal.channel.uid)
    proc = entry[1] if entry else None
    return proc if isinstance(proc, trio.Process) else None


async def reap_children(nursery: Any, grace: float = 1.0) -> None:
    """After `nursery.cancel()`: give the children `grace` seconds to exit, then SIGKILL the
    rest (one stuck in a callback that never returns ignores cancellation)."""
    procs = [entry[1] for entry in list(getattr(nursery, "_children", {}).values())
             if isinstance(entry[1], trio.Process)]
    with trio.move_on_after(grace):
        for proc in procs:
            await proc.wait()
    for proc in procs:
        if proc.returncode is None:
            log.warning("actor process %d did not stop; killing it", proc.pid)
            proc.kill()


@asynccontextmanager
async def _connect(addr: tuple[str, int]) -> AsyncIterator[Any]:
    # tractor 0.1.0a5's own `_connect_chan` closes its socket only when its body returns
    # normally: this one closes it whatever happens.
    from tractor._ipc import Channel
    from tractor._portal import open_portal

    chan = Channel(destaddr=(str(addr[0]), int(addr[1])))
    await chan.connect()
    try:
        async with open_portal(chan) as portal:
            yield portal
    finally:
        with trio.CancelScope(shield=True):
            await chan.aclose()


@asynccontextmanager
async def open_registry(addr: tuple[str, int]) -> AsyncIterator[Any]:
    """A portal to the registry (tractor's arbiter) at `addr`, also from an actor that is
    itself the arbiter of another registry (tractor's `get_arbiter` would answer locally)."""
    actor = tractor.current_actor()
    addr = (str(addr[0]), int(addr[1]))
    if actor.is_arbiter and tuple(actor._arb_addr or ()) == addr:
        async with tractor.get_arbiter(*addr) as portal:  # this actor: a local portal
            yield portal
        return
    async with _connect(addr) as portal:
        yield portal


@asynccontextmanager
async def open_peer(name: str) -> AsyncIterator[Any | None]:
    """A portal to the actor registered as `name` in this actor's registry (None if there is
    none), like `tractor.find_actor` but never leaving a socket open."""
    async with open_registry(tractor.current_actor()._arb_addr) as registry:
        sockaddr = await registry.run_from_ns("self", "find_actor", name=name)
    if not sockaddr:
        yield None
        return
    async with _connect(tuple(sockaddr)) as portal:
        yield portal


async def registered_names(addr: tuple[str, int]) -> dict[str, tuple[str, int]]:
    """Every actor name registered at `addr`, with its address (the last one per name)."""
    async with open_registry(addr) as portal:
        found = await portal.run_from_ns("self", "get_registry")
    # Keys are "<name>.<uuid>"; a uuid has no dots, an actor name may.
    return {key.rsplit(".", 1)[0]: (str(a[0]), int(a[1])) for key, a in found.items()}
