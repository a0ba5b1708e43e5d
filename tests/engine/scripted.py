"""A scripted provider for tests: trades on a fixed schedule, stamped by the engine clock."""

from __future__ import annotations

import types

import numpy as np
import trio

from engine.clock import current_clock
from engine.dtypes import ohlc_dtype
from engine.provider import Provider


def make_provider(symbols=("aaa", "bbb"), *, every: float = 0.1, count: int | None = None,
                  bad_every: int = 0, history_bars: int = 0, history_period: int = 1,
                  name: str = "scripted") -> Provider:
    """Each symbol trades every `every` s (price = 100 + i); every `bad_every`-th quote is
    malformed; `history_bars` 1-period bars end at the clock's start."""

    async def stream_quotes(send_chan, symbols_, shm, feed_is_live, loglevel=None,
                            task_status=trio.TASK_STATUS_IGNORED):
        for s in symbols_:
            if s not in symbols:
                raise KeyError(f"unknown symbol {s!r}")
        clock = current_clock()
        first = {s: {"symbol": s, "last": 100.0, "time": clock.now(), "ticks": []}
                 for s in symbols_}
        task_status.started(({s: {} for s in symbols_}, first))
        feed_is_live.set()
        i = 0
        while count is None or i < count:
            await trio.sleep(every)
            i += 1
            for s in symbols_:
                t = clock.now()
                msg = {"symbol": s, "last": 100.0 + i, "time": t, "seq": i,
                       "ticks": [{"type": "trade", "price": 100.0 + i, "size": 1.0, "time": t}]}
                if bad_every and i % bad_every == 0:
                    msg["ticks"][0]["price"] = "oops"
                await send_chan.send(msg)
        await trio.sleep_forever()

    async def backfill_bars(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            task_status.started(scope)
            if not history_bars:
                return
            end = int(current_clock().now()) // history_period * history_period
            rows = np.zeros(history_bars, dtype=ohlc_dtype)
            rows["time"] = end - history_period * np.arange(history_bars, 0, -1)
            rows["open"] = rows["high"] = rows["low"] = rows["close"] = rows["bar_wap"] = 50.0
            rows["volume"] = 1.0
            rows["count"] = 1
            await trio.lowlevel.checkpoint()  # a real backfill awaits its source here
            shm.push(rows[-shm.room_after:])

    mod = types.ModuleType(name)
    mod.ohlc_dtype = ohlc_dtype
    mod.stream_quotes = stream_quotes
    mod.backfill_bars = backfill_bars
    return Provider(name=name, module=mod)
