"""Supervision of strategy actors: spawn one, watch it, report how it ended, restart it with
exponential backoff when asked to.

A strategy that raises is reported with its own traceback lines (its actor returns them); an
actor process that dies (kill -9, a segfault) is reported with how it died, which is watched on
its process handle because tractor 0.1.0a5 does not end a peer's contexts when it dies. Either
way the feed, the clearing actor and the other strategies carry on. This module never touches
the feed or the accounts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from engine.actors._runtime import LINK_ERRORS, child_process, describe_exit, tractor
from engine.actors.strategy_actor import run_strategy

__all__ = ["Backoff", "StrategySlot", "supervise_strategy", "spawn_strategy_actor", "actor_name",
           "remote_error_text"]

log = logging.getLogger("engine.actors")

Notify = Callable[[dict[str, Any]], None]


@dataclass
class Backoff:
    """Restart delays in seconds: `first`, then times `factor` per quick failure up to `cap`;
    a life of at least `healthy` seconds starts the sequence again."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    healthy: float = 30.0
    _last: float = 0.0

    def next(self, lived: float) -> float:
        """The delay before restarting an actor that ran `lived` seconds."""
        if self._last == 0.0 or lived >= self.healthy:
            self._last = self.first
        else:
            self._last = min(self._last * self.factor, self.cap)
        return self._last


@dataclass
class StrategySlot:
    """One strategy of the run across its actor's lives: what to run and what happened."""

    path: str
    name: str
    params: dict[str, Any]
    symbols: list[str]
    pid: int | None = None
    lives: int = 0
    state: str = "starting"  # running, failed, restarting, stopped
    live_stats: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=lambda: {"quotes": 0, "bars": 0,
                                                             "coalesced": 0})
    orders: list[dict] = field(default_factory=list)
    positions: dict[str, float] = field(default_factory=dict)  # its own, as its last life ended
    failures: list[str] = field(default_factory=list)
    error: str | None = None  # how the last life ended, if it failed
    control: Any = None  # the running life's context stream (to send "stop")
    stop_requested: bool = False
    stop_event: trio.Event = field(default_factory=trio.Event)
    ready: trio.Event = field(default_factory=trio.Event)  # first life running or failed

    def stats(self) -> dict[str, int]:
        live = self.live_stats
        return {k: self.totals[k] + int(live.get(k, 0)) for k in ("quotes", "bars", "coalesced")
                } | {"orders": len(self.orders) + int(live.get("orders", 0))}

    def _close_life(self, report: dict[str, Any] | None) -> None:
        if report is not None:
            for key in ("quotes", "bars", "coalesced"):
                self.totals[key] += int(report.get(key, 0))
            self.orders.extend(report.get("orders") or [])
            self.positions = dict(report.get("positions") or {})
        elif self.live_stats:
            for key in ("quotes", "bars", "coalesced"):
                self.totals[key] += int(self.live_stats.get(key, 0))
        self.live_stats = {}


def remote_error_text(exc: BaseException) -> str:
    """One readable line for an error that crossed from another actor."""
    if isinstance(exc, tractor.RemoteActorError):
        tb = str(exc.msgdata.get("tb_str", "")).strip().splitlines()
        last = tb[-1].strip() if tb else str(exc)
        if isinstance(exc, tractor.ContextCancelled):
            return "its actor was cancelled"
        return last
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def actor_name(slot: StrategySlot, life: int) -> str:
    """The registry name of a strategy's actor: unique per run and per life."""
    return f"strategy.{slot.name}.{os.getpid()}.{life}"


async def spawn_strategy_actor(an: Any, slot: StrategySlot, life: int) -> Any:
    """Start the process of a strategy actor (its imports run while the caller goes on)."""
    return await an.start_actor(actor_name(slot, life),
                                enable_modules=["engine.actors.strategy_actor"])


async def _one_life(an: Any, slot: StrategySlot, kwargs: dict[str, Any], notify: Notify,
                    portal: Any = None) -> tuple[dict[str, Any] | None, str | None]:
    """Run the slot's strategy in `portal`'s actor (or a new one) to its end; return (its
    report, why it failed)."""
    slot.lives += 1
    slot.pid = None
    if portal is None:
        portal = await spawn_strategy_actor(an, slot, slot.lives)
    proc = child_process(an, portal)
    report: dict[str, Any] | None = None
    failure: str | None = None
    died: list[int] = []
    async with trio.open_nursery() as nursery:
        if proc is not None:
            async def watch() -> None:
                died.append(await proc.wait())
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
        try:
            async with portal.open_context(run_strategy, **kwargs) as (ctx, first):
                if "error" in first:
                    failure = first["error"]
                else:
                    slot.pid = first["pid"]
                    slot.state = "running"
                    slot.ready.set()
                    notify({"event": "strategy_started", "strategy": slot.name,
                            "pid": slot.pid, "life": slot.lives,
                            "segments": first.get("segments", [])})
                    async with ctx.open_stream() as stream:
                        slot.control = stream
                        if slot.stop_requested:
                            await stream.send("stop")
                        try:
                            async for msg in stream:
                                slot.live_stats = msg
                                notify({"event": "strategy_stats", "strategy": slot.name,
                                        "life": slot.lives, **msg})
                        finally:
                            slot.control = None
                report = await ctx.result()
        except LINK_ERRORS as exc:
            failure = remote_error_text(exc)
        nursery.cancel_scope.cancel()
    slot.ready.set()
    if died:
        failure = f"its actor process (pid {slot.pid or '?'}) {describe_exit(died[0])}"
        report = None
    elif report is not None and report.get("error"):
        failure = report["error"]
    slot.control = None
    if proc is None or proc.returncode is None:
        await portal.cancel_actor()  # bounded and shielded inside tractor (0.5 s)
    return report, failure


async def supervise_strategy(an: Any, slot: StrategySlot, kwargs: dict[str, Any], *,
                             restart: bool, backoff: Backoff, notify: Notify,
                             portal: Any = None) -> None:
    """Run the slot's strategy in an actor (the first life in `portal`'s, if given) until it
    stops on request; report each failure and, with `restart`, start it again after the
    backoff delay."""
    while True:
        started = trio.current_time()
        report, failure = await _one_life(an, slot, kwargs, notify, portal)
        portal = None
        slot._close_life(report)
        if failure is None:
            slot.state, slot.error = "stopped", None
            notify({"event": "strategy_stopped", "strategy": slot.name, "pid": slot.pid})
            return
        slot.state, slot.error = "failed", failure
        slot.failures.append(failure)
        delay = backoff.next(trio.current_time() - started) if restart else None
        notify({"event": "strategy_failed", "strategy": slot.name, "pid": slot.pid,
                "life": slot.lives, "error": failure, "restart_in": delay})
        if delay is None or slot.stop_requested:
            return
        slot.state = "restarting"
        with trio.move_on_after(delay):
            await slot.stop_event.wait()
        if slot.stop_requested:
            return
