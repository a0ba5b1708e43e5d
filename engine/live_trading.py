"""Opening a live broker for `engine run --live`: the provider's trading session, the account's
ledger, the start-up summary (venue, account, balances, limits) and the user's confirmation.

The provider is found by module path like any other (its optional `open_trading`, SPEC.md
"Order entry"); this module never imports a venue by name and never sees a key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from engine.clearing.venue_broker import LiveLimits, VenueBroker, open_live_account
from engine.clock import Clock
from engine.provider import Provider, ProviderError

__all__ = ["LiveSettings", "LiveAborted", "open_live_broker", "describe_start"]


class LiveAborted(RuntimeError):
    """The user did not confirm the start of a live run."""


@dataclass(frozen=True)
class LiveSettings:
    """What a live run needs beyond a paper run: the account, its limits, where the keys are
    (None: the environment) and who confirms (None: nobody asks)."""

    account: str
    limits: LiveLimits = LiveLimits()
    keys_file: str | None = None
    confirm: Callable[[str], bool] | None = None


def describe_start(broker: VenueBroker, balances: dict) -> str:
    """The lines shown before a live run starts: venue, account, balances, limits, halt."""
    a = broker.account
    lines = [f"LIVE TRADING on {broker.venue}, account {a.name} (ledger {broker.directory})",
             "  balances: " + (", ".join(f"{b.asset} {b.total:g}" for b in balances.values()
                                         if b.total) or "none"),
             f"  account: cash {a.cash:,.2f}, "
             + (", ".join(f"{p.symbol} {p.quantity:g}" for p in a.positions_view())
                or "no positions")
             + f", {len(a.open_orders())} working orders",
             f"  limits: {broker.limits.describe()}"]
    if broker.halted:
        lines.append(f"  HALTED: {broker.halted} (engine account resume {a.name} to trade)")
    return "\n".join(lines)


@asynccontextmanager
async def open_live_broker(provider: Provider, symbols: list[str], clock: Clock,
                           settings: LiveSettings) -> AsyncIterator[VenueBroker]:
    """Open the provider's trading session and the live account, show the start-up summary to
    `settings.confirm` and yield the broker; raise LiveAborted when it says no."""
    open_trading = getattr(provider.module, "open_trading", None)
    if open_trading is None:
        raise ProviderError(f"provider {provider.name!r} cannot trade (it has no open_trading); "
                            "live trading needs a venue provider such as binance")
    async with open_trading(symbols, now=clock.now, keys_file=settings.keys_file) as session:
        await session.sync_time()
        broker = await open_live_account(settings.account, session, clock,
                                         limits=settings.limits, symbols=symbols)
        try:
            if settings.confirm is not None:
                text = describe_start(broker, await session.balances())
                if not settings.confirm(text):
                    raise LiveAborted("not confirmed; nothing was sent")
            yield broker
        finally:
            broker.ledger.close()
