"""A provider for the actor tests: the sim market with every quote numbered (`seq`, from 0) in
the order the provider sends it, so a test can count and order what a strategy received."""

from __future__ import annotations

import itertools

import trio

from engine.provider import load_provider

_sim = load_provider("providers.sim")
ohlc_dtype = _sim.ohlc_dtype
backfill_bars = _sim.backfill_bars


def configure(**options):
    return _sim.module.configure(**options)


class _Numbering(trio.abc.SendChannel):
    def __init__(self, inner, counter):
        self._inner = inner
        self._counter = counter

    def send_nowait(self, msg):
        msg["seq"] = next(self._counter)
        self._inner.send_nowait(msg)

    async def send(self, msg):
        msg["seq"] = next(self._counter)
        await self._inner.send(msg)

    async def aclose(self):
        await self._inner.aclose()

    def clone(self):
        return _Numbering(self._inner.clone(), self._counter)


async def stream_quotes(send_chan, symbols, shm, feed_is_live, loglevel=None,
                        task_status=trio.TASK_STATUS_IGNORED):
    await _sim.stream_quotes(_Numbering(send_chan, itertools.count()), symbols, shm,
                             feed_is_live, loglevel, task_status=task_status)
