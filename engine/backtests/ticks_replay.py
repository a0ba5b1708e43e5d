"""Tick-level backtests: recorded ticks replayed through the live sampler, Context and clearing.

Every tick becomes the quote message a live feed would deliver (its tick, the book's bid/ask and
the last trade), orders are matched against each quote with the paper broker's kernel (market at
the opposite side, limits at the better price, displayed sizes capping fills), and bars are
built by the live sampler, closed by the replay clock, so `on_bar` sees exactly what it would
have seen live. Equity is marked at each bar close.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np

from engine.clearing.broker import PaperBroker
from engine.clock import ReplayClock
from engine.dtypes import ASIZE, ASK, BID, BSIZE, DARK_TRADE, TICK_NAMES, TRADE, UTRADE, ohlc_dtype
from engine.orders import OrderCancelled, OrderFilled
from engine.sampler import Sampler
from engine.scheduler import callback_for, make_runner, overrides
from engine.shm import ShmArray
from engine.strategy import Strategy

__all__ = ["replay_ticks"]


async def replay_ticks(strat: Strategy, ticks: dict[str, np.ndarray], period: int,
                       broker: PaperBroker, clock: ReplayClock
                       ) -> tuple[list[OrderFilled], dict[str, np.ndarray], np.ndarray, np.ndarray,
                                  np.ndarray, list[OrderCancelled]]:
    """Replay; return fills, the bars built, the equity curve (times, equity, exposed) and
    the orders cancelled (`OrderCancelled` events)."""
    symbols = list(ticks)
    rows = np.concatenate([t for t in ticks.values()])
    rows["sym"] = np.concatenate([np.full(len(t), j) for j, t in enumerate(ticks.values())])
    rows = rows[np.argsort(rows["time"], kind="stable")]
    span = rows["time"][-1] - rows["time"][0]
    shms = {s: ShmArray.create(ohlc_dtype, int(span // period) + 4, start=0) for s in symbols}
    try:
        return await _run(strat, symbols, rows, shms, period, broker, clock)
    finally:
        for shm in shms.values():
            shm.close()
            shm.unlink()


async def _run(strat, symbols, rows, shms, period, broker, clock):
    sampler = Sampler(period, [shms[s] for s in symbols])
    runner = make_runner(strat, symbols=symbols, timeframe=period, bars=shms, quotes={},
                         clock=clock, router=broker)
    ctx = runner.context
    ctx.set_id_prefix("o")
    account = broker.account
    index = [account.add_symbol(s) for s in symbols]
    pending: list = []
    broker.attach(None, pending.extend)
    fills: list[OrderFilled] = []
    cancels: list[OrderCancelled] = []
    book = {s: [math.nan, math.nan, math.nan, math.nan, math.nan] for s in symbols}
    cls = type(strat)
    wants_bar = overrides(cls, "on_bar")
    wants_quote = overrides(cls, "on_quote")
    curve_t: list[float] = []
    curve_e: list[float] = []
    exposed: list[bool] = []

    async def call(fn: Any, arg: Any) -> None:
        r = fn(arg)
        if inspect.isawaitable(r):
            await r

    async def deliver() -> None:
        while pending:
            events = pending[:]
            pending.clear()
            for e in events:
                if isinstance(e, OrderFilled):
                    fills.append(e)
                elif isinstance(e, OrderCancelled):
                    cancels.append(e)
                await call(getattr(strat, callback_for(e)), e)

    async def closed(syms: list[int], at: float) -> None:
        for j in syms:
            ctx.bar_closed(symbols[j])
            bar = shms[symbols[j]].array[-1]
            clock._now = max(clock._now, float(bar["time"]) + period)
            curve_t.append(float(bar["time"]))  # stamped by the period it covers
            curve_e.append(account.equity())
            exposed.append(bool(np.any(account.positions[:, 0] != 0)))
            if wants_bar:
                await call(strat.on_bar, symbols[j])
            await deliver()

    await call(lambda _: strat.on_start(), None)
    await deliver()
    one = np.empty(1, dtype=rows.dtype)
    for row in rows:
        t = float(row["time"])
        await closed(sampler.close_until(t), t)
        clock._now = t
        j = int(row["sym"])
        sym = symbols[j]
        typ = int(row["type"])
        b = book[sym]
        px, sz = float(row["price"]), float(row["size"])
        trade = math.nan
        if typ == BID or typ == BSIZE:
            b[0], b[2] = px, sz
        elif typ == ASK or typ == ASIZE:
            b[1], b[3] = px, sz
        elif typ in (TRADE, UTRADE, DARK_TRADE):
            trade = b[4] = px
        mid = (b[0] + b[1]) / 2 if not (math.isnan(b[0]) or math.isnan(b[1])) else b[4]
        if not math.isnan(mid):
            account.marks[index[j]] = mid
        broker._books[sym] = (b[0], b[1], b[2], b[3], trade)
        if account.unsettled:
            broker._record(account.match(sym, t, b[0], b[1], b[2], b[3], trade))
            await deliver()
        one[0] = row
        await closed(sampler.fold(one), t)
        if wants_quote:
            quote = {"symbol": sym, "last": b[4], "time": t, "bid": b[0], "ask": b[1],
                     "ticks": [{"type": TICK_NAMES[typ], "price": px, "size": sz, "time": t}]}
            await call(strat.on_quote, quote)
            await deliver()
    await closed(sampler.close_until(float(rows["time"][-1]) + period), 0.0)
    await call(lambda _: strat.on_stop(), None)
    await deliver()
    bars = {s: shms[s].array.copy() for s in symbols}
    return fills, bars, np.array(curve_t), np.array(curve_e), np.array(exposed), cancels
