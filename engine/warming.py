"""Warm-up in live runs: how many bars a strategy needs, known before the feed opens, and the
gate that holds its quote and bar callbacks until its symbols have them.

A strategy's figure is its class's `warmup` when it declares one; else it is derived
(`engine.warmup.strategy_warmup`) from the indicators its `on_start` declares, run once on a
throwaway copy of it (same class, same parameters) whose context records indicator declarations
and nothing else: it has no bars, its orders go nowhere, its log lines are dropped. That copy
never becomes the running strategy; the real one starts later, once, on the backfilled bars.

The gate is the backtests' rule: a strategy is not called (on_quote, on_bar) for a symbol until
that symbol has as many closed bars visible as its warm-up needs; events about its orders still
reach it. Nothing here reads the clock or touches a feed.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

from engine.clock import Clock, LiveClock
from engine.dtypes import ohlc_dtype
from engine.sampler import format_timeframe
from engine.strategy import Context, Strategy, StrategyError
from engine.timeframes import add_timeframes, declared_timeframes
from engine.warmup import strategy_warmup

__all__ = ["WarmGate", "WarmupNeed", "probe_warmup"]

log = logging.getLogger("engine.warmup")

# Seconds (real time) an on_start may take in the dry pass before it is left behind.
DRY_BUDGET = 10.0


@dataclass(frozen=True)
class WarmupNeed:
    """Closed bars of the run's timeframe a strategy needs before it is called (`bars`), and
    how that was found: `declared` (its class's `warmup`), `derived` (from its indicators),
    or `none` (it declares no indicator). `note` says why the figure may be short."""

    strategy: str
    bars: int
    how: str
    note: str | None = None

    def describe(self) -> str:
        what = {"declared": "declared", "derived": "derived from its indicators",
                "none": "no indicators"}[self.how]
        return f"{self.strategy}: {self.bars} bars ({what})" + (f"; {self.note}"
                                                                 if self.note else "")


class _NoBars:
    """A symbol's bars in the dry pass: none, ever."""

    size = 2  # indicator sources size their value arrays from it

    def span(self) -> tuple[int, int]:
        return 0, 0

    def window(self, stop: int) -> np.ndarray:
        return np.empty(0, dtype=ohlc_dtype)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.empty(0, dtype=ohlc_dtype)


class _NoOrders:
    """The dry pass's order router: orders and cancels go nowhere; every position is flat."""

    def submit(self, order: Any) -> None: ...
    def cancel(self, command: Any) -> None: ...
    def modify(self, command: Any) -> None: ...
    def link(self, command: Any) -> None: ...

    def position(self, symbol: str) -> float:
        return 0.0


_SILENT = logging.Logger("engine.warmup.dry")
_SILENT.disabled = True


async def _in_a_thread(fn: Any) -> bool:
    """Run synchronous `fn` in a thread of its own, waiting up to DRY_BUDGET seconds of real
    time (a start stuck on I/O or in a loop is left behind, never holding the event loop);
    whether it returned. Its exception, if it raised, is raised here."""
    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["exc"] = exc

    thread = threading.Thread(target=target, name="dry on_start", daemon=True)
    thread.start()
    await trio.to_thread.run_sync(thread.join, DRY_BUDGET, abandon_on_cancel=True)
    if "exc" in box:
        raise box["exc"]
    return not thread.is_alive()


async def probe_warmup(strategy: Strategy, *, symbols: Sequence[str], timeframe: int,
                       clock: Clock | None = None, threaded: bool = False) -> WarmupNeed:
    """Find the closed bars of `timeframe` seconds `strategy` needs before it is called: its
    class's `warmup`, or the warm-up of the indicators a dry `on_start` of a copy of it
    declares over `symbols`. Never calls `strategy`'s own callbacks. `threaded`: a synchronous
    on_start runs in a thread of its own and is left behind after DRY_BUDGET seconds of real
    time, so a start stuck before the run's watchdog exists cannot hang the process (the CLI's
    runs); otherwise it runs on the loop, as the real start would."""
    cls = type(strategy)
    name = strategy.name
    declared = getattr(cls, "warmup", None)
    if declared is not None:
        return WarmupNeed(name, max(0, int(declared)), "declared")
    try:
        dry = cls(**strategy.params.model_dump())
    except Exception as exc:  # noqa: BLE001 - a class that cannot be copied: said here
        note = (f"a copy of it for the dry on_start could not be made ({type(exc).__name__}: "
                f"{exc}); declare `warmup = N` on the class")
        log.warning("warm-up of %s: %s", name, note)
        return WarmupNeed(name, 0, "none", note)
    dry.__dict__["_logger"] = _SILENT  # Strategy.log: the dry pass says nothing
    bars = {s: _NoBars() for s in symbols}
    dry.ctx = Context(symbols=list(symbols), timeframe=timeframe, bars=bars, quotes={},
                      clock=clock or LiveClock(), router=_NoOrders(), strategy_name=name)
    dry.ctx.lot_sizes = dict(cls.lot_sizes)
    try:
        add_timeframes(dry.ctx, declared_timeframes(cls, timeframe), lambda s: 4,
                       format_timeframe(timeframe))
    except ValueError as exc:
        raise StrategyError(str(exc)) from None
    note = None
    try:
        if inspect.iscoroutinefunction(dry.on_start):
            with trio.move_on_after(DRY_BUDGET) as scope:
                await dry.on_start()
            if scope.cancelled_caught:
                note = f"on_start took over {DRY_BUDGET:g} s in the dry pass"
        elif threaded:
            if not await _in_a_thread(dry.on_start):
                note = f"on_start took over {DRY_BUDGET:g} s in the dry pass"
        else:
            dry.on_start()
    except Exception as exc:  # noqa: BLE001 - a dry start without bars may fail; said below
        note = f"on_start raised {type(exc).__name__}: {exc} in the dry pass (no bars there)"
    bars_needed = strategy_warmup(dry)
    if note is not None:
        note += (f"; counted the {len(dry.ctx._sources)} indicator(s) declared before it; "
                 "declare `warmup = N` on the class to be exact")
        log.warning("warm-up of %s: %s", name, note)
    how = "derived" if dry.ctx._sources else "none"
    return WarmupNeed(name, bars_needed, how, note)


class WarmGate:
    """Which of a running strategy's symbols are still cold: fewer than `bars` closed bars
    visible to it. `cold(symbol)` is asked for each quote and bar before its callback."""

    def __init__(self, name: str, bars: int, seen: dict[str, list[int]]) -> None:
        self.name = name
        self.bars = bars
        self._seen = seen
        self._cold = {s for s, n in seen.items() if n[0] < bars}

    @classmethod
    def after_start(cls, strategy: Strategy, context: Context) -> WarmGate | None:
        """The gate of a strategy that has run on_start (its indicators are declared), or None
        when every symbol already has the bars it needs."""
        need = strategy_warmup(strategy)
        gate = cls(strategy.name, need, {s: context._seen[s] for s in context.symbols
                                         if s in context._seen})
        if not gate._cold:
            return None
        tf = format_timeframe(context.timeframe)
        short = ", ".join(f"{s} has {context._seen[s][0]}" for s in sorted(gate._cold))
        log.warning("strategy %s needs %d closed %s bars to be warm (%s): it is not called for "
                    "those symbols until live bars complete its warm-up", strategy.name, need,
                    tf, short)
        return gate

    def cold(self, symbol: str) -> bool:
        """Whether `symbol` still has fewer bars than the warm-up (the callback waits)."""
        if symbol not in self._cold:
            return False
        if self._seen[symbol][0] < self.bars:
            return True
        self._cold.discard(symbol)
        log.info("strategy %s is warm on %s (%d bars): called from now on", self.name, symbol,
                 self.bars)
        return False
