"""Glue between the engine and tractor 0.1.0a5: quiet import, addresses, child-process hygiene.

Every module of `engine.actors` imports tractor from here. This module knows nothing of feeds,
strategies or brokers; it never starts an actor itself.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
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
from tractor._exceptions import TransportClosed  # noqa: E402

__all__ = ["tractor", "DEFAULT_REGISTRY", "parse_hostport", "tractor_loglevel", "guard_child",
           "child_process", "LINK_ERRORS", "describe_exit", "TransportClosed"]

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


_guarded = False


async def _watch_parent(ppid: int) -> None:
    # An actor whose parent vanished (kill -9 of the root) must not live on as an orphan.
    while True:
        await trio.sleep(0.25)
        if os.getppid() != ppid:
            break
    log.warning("parent process %d is gone; actor %s stops", ppid, tractor.current_actor().name)
    tractor.current_actor().cancel_soon()


async def _watch_sigterm() -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            tractor.current_actor().cancel_soon()
            return


def guard_child(nursery: trio.Nursery) -> None:
    """Make this child actor process behave: ignore SIGINT (the root turns Ctrl-C into an
    orderly teardown of the whole tree), stop cleanly on SIGTERM, and stop if its parent dies.
    Call once from the actor's main context; later calls and calls in the root do nothing."""
    global _guarded
    if _guarded or tractor.is_root_process():
        return
    _guarded = True
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        nursery.start_soon(_watch_sigterm)
    nursery.start_soon(_watch_parent, os.getppid())


def child_process(nursery: Any, portal: Any) -> trio.Process | None:
    """The `trio.Process` of a child actor, to watch it die (tractor 0.1.0a5 does not tell
    open contexts when a peer's process dies; it keeps (actor, process, portal) per child)."""
    entry = getattr(nursery, "_children", {}).get(portal.channel.uid)
    proc = entry[1] if entry else None
    return proc if isinstance(proc, trio.Process) else None


def describe_exit(returncode: int | None) -> str:
    """Say how a process ended: `exited with status 1`, `killed by SIGKILL`."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"
