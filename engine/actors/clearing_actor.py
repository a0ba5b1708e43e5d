"""The clearing actor: owns the paper accounts (and their ledgers) of an actor run.

`serve_clearing` opens one router per account: a `PaperBroker` rebuilt from the account's ledger
with `--paper`, or an `IntentLog` that only logs what would have been sent. It subscribes to the
feed daemon's quote stream to mark positions and match working orders. Strategy actors connect
with `open_order_flow`: they get their own book on the account (`engine.books`: the position
and working orders of their earlier lives and runs) and a client id prefix unused there, send
`SubmitOrder` / `CancelOrder` / `ModifyOrder` as dicts and get back their own broker events,
from which they keep that book. Only this actor writes a ledger.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from engine.actors._runtime import LINK_ERRORS, guard_child, open_peer, tractor
from engine.actors.daemon import FeedGone, open_subscription
from engine.actors.logs import configure_child_logging
from engine.actors.messages import BAR, QUOTE, command_from, plain
from engine.books import StrategyBook, book_of, id_prefix
from engine.clock import LiveClock
from engine.orders import CancelOrder, ModifyOrder
from engine.strategy import IntentLog

__all__ = ["serve_clearing", "open_order_flow", "OrderFlow", "open_order_link"]

log = logging.getLogger("engine.actors.clearing")


@dataclass
class _Clearing:
    routers: dict[str, Any]
    clock: LiveClock
    # The open order flow of each (account, strategy): a flow ending after the strategy's next
    # life opened its own (a killed actor is noticed late) must not unhook the new one.
    flows: dict[tuple[str, str], object] = field(default_factory=dict)


_clearing: _Clearing | None = None


def _open_router(name: str, spec: dict | None, symbols: list[str], clock: LiveClock) -> Any:
    if spec is None:
        return IntentLog()
    from engine.clearing.broker import open_account
    from engine.clearing.config import BrokerConfig

    config = BrokerConfig.model_validate(spec["config"]) if spec.get("config") else None
    return open_account(name, symbols, cash=spec.get("cash"), config=config, clock=clock,
                        path=spec.get("path"), instruments=spec.get("instruments"))


def _summary(router: Any) -> dict[str, Any] | None:
    if not hasattr(router, "summary"):
        return None
    return plain(dict(router.summary(), fills=len(router.fills)))


@tractor.context
async def serve_clearing(ctx: Any, feed: str, symbols: list[str],
                         accounts: dict[str, dict | None], log_level: str = "info",
                         lane: bool = False) -> Any:
    """Open the accounts, follow the feed, serve order flows until the caller says "stop";
    return each paper account's summary (None for an intents-only account)."""
    global _clearing
    configure_child_logging(log_level)
    clock = LiveClock()
    routers: dict[str, Any] = {}
    async with trio.open_nursery() as guard:
        guard_child(guard)
        try:
            for name, spec in accounts.items():
                routers[name] = _open_router(name, spec, symbols, clock)
        except Exception as exc:  # noqa: BLE001 - a bad account or a locked ledger: say which
            await ctx.started({"error": f"account {name!r}: {exc}", "pid": os.getpid()})
            _close(routers)
            guard.cancel_scope.cancel()
            return None
        paper = [r for r in routers.values() if hasattr(r, "on_batch")]
        try:
            async with AsyncExitStack() as stack:
                # Only paper accounts match and mark against quotes: an intents-only run
                # leaves the quote stream alone (one subscriber less for the daemon).
                sub = await stack.enter_async_context(
                    open_subscription(feed, symbols, lane=lane)) if paper else None
                for quote in sub.quotes.values() if sub else ():
                    for router in paper:
                        router.on_batch([quote], [], [])
                _clearing = _Clearing(routers, clock)
                await ctx.started({"pid": os.getpid(), "accounts": list(routers)})
                async with ctx.open_stream() as control, trio.open_nursery() as nursery:
                    for router in paper:
                        nursery.start_soon(router.run)
                    if sub is not None:
                        nursery.start_soon(_follow, sub, paper)
                    async for msg in control:
                        if msg == "stop":
                            break
                    nursery.cancel_scope.cancel()
            return {name: _summary(r) for name, r in routers.items()}
        finally:
            _clearing = None
            _close(routers)
            guard.cancel_scope.cancel()


def _close(routers: dict[str, Any]) -> None:
    for router in routers.values():
        ledger = getattr(router, "ledger", None)
        if ledger is not None:
            ledger.close()


async def _follow(sub: Any, paper: list[Any]) -> None:
    try:
        while True:
            items = await sub.receive()
            quotes = [p for k, p in items if k == QUOTE]
            bars = [p for k, p in items if k == BAR]
            for router in paper:
                router.on_batch(quotes, bars, [])
    except FeedGone as exc:
        log.error("clearing stops matching: %s", exc)


@tractor.context
async def open_order_flow(ctx: Any, account: str, strategy: str) -> None:
    """Take one strategy's order commands for `account`; send back its broker events.

    `started` carries the strategy's book on the account (a snapshot of `StrategyBook`) and a
    client id prefix no earlier order of the strategy used there."""
    state = _clearing
    router = state.routers.get(account) if state else None
    if router is None:
        await ctx.started({"error": f"the clearing actor has no account {account!r}"})
        return
    send, recv = trio.open_memory_channel(math.inf)
    flow = object()
    if hasattr(router, "attach"):
        # The book is read from the account with no event on its way to anyone: every event
        # after this moment reaches the new listener, none before it does.
        router.flush()
        router.attach(strategy, send.send_nowait)
        state.flows[account, strategy] = flow
        book, taken = book_of(router.account, strategy)
    else:
        book, taken = StrategyBook(strategy, fills_on_submit=True), []
    try:
        await ctx.started({"book": book.snapshot(),
                           "prefix": id_prefix(strategy, state.clock.now(), taken)})
        async with ctx.open_stream() as stream, trio.open_nursery() as nursery:

            async def answer() -> None:
                async for events in recv:
                    await stream.send({"events": [e.model_dump() for e in events]})

            nursery.start_soon(answer)
            try:
                async for msg in stream:
                    _dispatch(router, msg)
            except LINK_ERRORS:
                pass
            nursery.cancel_scope.cancel()
    finally:
        if hasattr(router, "attach") and state.flows.get((account, strategy)) is flow:
            del state.flows[account, strategy]
            router.attach(strategy, lambda events: None)


def _dispatch(router: Any, msg: dict) -> None:
    try:
        command = command_from(msg)
    except ValueError as exc:
        log.error("bad order command from a strategy actor: %s", exc)
        return
    if isinstance(command, CancelOrder):
        router.cancel(command)
    elif isinstance(command, ModifyOrder):
        router.modify(command)
    else:
        router.submit(command)


@dataclass
class OrderFlow:
    """A strategy actor's end of `open_order_flow`: its book on the account, its client id
    prefix, and the stream (commands out, `{"events": [...]}` back)."""

    book: StrategyBook
    prefix: str
    stream: Any


@asynccontextmanager
async def open_order_link(clearing: str, account: str, strategy: str
                          ) -> AsyncIterator[OrderFlow]:
    """Find the clearing actor `clearing` and open `strategy`'s order flow on `account`."""
    async with open_peer(clearing) as portal:
        if portal is None:
            raise RuntimeError(f"no clearing actor named {clearing!r} in the registry")
        async with portal.open_context(open_order_flow, account=account,
                                       strategy=strategy) as (ctx, first):
            if "error" in first:
                raise RuntimeError(first["error"])
            async with ctx.open_stream() as stream:
                yield OrderFlow(StrategyBook.restore(first["book"]), first["prefix"], stream)
