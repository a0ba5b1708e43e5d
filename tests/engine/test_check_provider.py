"""The conformance checker passes a provider that keeps the spec and names the rule one breaks."""

from __future__ import annotations

import types

import numpy as np
import pytest
import trio
import trio.lowlevel

from engine.check_provider import check_provider
from engine.dtypes import ohlc_dtype
from engine.provider import Provider, ProviderError, load_provider

KNOWN = {"aaa": 10.0, "bbb": 20.0}


def _quote(sym: str, price: float, t: float) -> dict:
    return {"symbol": sym, "last": price, "time": t,
            "ticks": [{"type": "trade", "price": price, "size": 1.0, "time": t},
                      {"type": "bid", "price": price - 0.01, "size": 3.0}]}


async def good_stream(send_chan, symbols, shm, feed_is_live, loglevel=None,
                      task_status=trio.TASK_STATUS_IGNORED):
    for s in symbols:
        if s not in KNOWN:
            raise KeyError(f"unknown symbol {s!r}")
    task_status.started(({s: {"tick_size": 0.01} for s in symbols},
                         {s: _quote(s, KNOWN[s], 1e9) for s in symbols}))
    feed_is_live.set()
    t = 1e9
    while True:
        for s in symbols:
            t += 0.5
            await send_chan.send(_quote(s, KNOWN[s], t))
        await trio.sleep(0.001)


def _bars(t0: int, n: int) -> np.ndarray:
    rows = np.zeros(n, dtype=ohlc_dtype)
    rows["time"] = t0 + 60 * np.arange(n)
    rows["open"] = rows["close"] = rows["bar_wap"] = 10.0
    rows["high"], rows["low"], rows["volume"] = 11.0, 9.0, 5.0
    return rows


async def good_backfill(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
    with trio.CancelScope() as scope:
        task_status.started(scope)
        frame = 100
        newest = 2_000_000_000 - 60 * frame
        for i in range(count):
            await trio.lowlevel.checkpoint()
            rows = _bars(newest - i * 60 * frame, frame)
            if i == 0:
                rows = rows[: shm.room_after]
                shm.push(rows)
            else:
                room = shm.room_before
                if room == 0:
                    break
                shm.prepend(rows[-room:])


def make(**overrides) -> Provider:
    mod = types.ModuleType("fake_provider")
    mod.ohlc_dtype = ohlc_dtype
    mod.stream_quotes = good_stream
    mod.backfill_bars = good_backfill
    mod.search_symbols = lambda pattern: sorted(KNOWN)
    for name, value in overrides.items():
        setattr(mod, name, value)
    return Provider(name="fake_provider", module=mod)


async def run_check(provider: Provider, symbols=("aaa", "bbb")):
    return await check_provider(provider, list(symbols), timeout=1.0, messages=20)


async def test_a_conforming_provider_passes_every_rule():
    report = await run_check(make())
    assert report.ok, report.format()
    rules = {r.rule for r in report.results}
    assert rules >= {"surface", "startup", "init_msgs", "first_quotes", "nothing_before_started",
                     "tick_schema", "feed_is_live", "unknown_symbol", "cancellation",
                     "backfill_started", "backfill_rows", "backfill_bounds"}


async def test_symbols_default_to_the_providers_search():
    report = await check_provider(make(), None, timeout=1.0, messages=5)
    assert report.symbols == ["aaa", "bbb"]
    assert report.ok


async def _no_started(send_chan, symbols, shm, feed_is_live, loglevel=None,
                      task_status=trio.TASK_STATUS_IGNORED):
    await trio.sleep_forever()


async def _missing_last(send_chan, symbols, shm, feed_is_live, loglevel=None,
                        task_status=trio.TASK_STATUS_IGNORED):
    first = {s: {"symbol": s, "ticks": []} for s in symbols}
    task_status.started(({s: {} for s in symbols}, first))
    await trio.sleep_forever()


async def _sends_early(send_chan, symbols, shm, feed_is_live, loglevel=None,
                       task_status=trio.TASK_STATUS_IGNORED):
    await send_chan.send(_quote(symbols[0], 1.0, 1e9))
    await good_stream(send_chan, symbols, shm, feed_is_live, task_status=task_status)


async def _bad_tick(send_chan, symbols, shm, feed_is_live, loglevel=None,
                    task_status=trio.TASK_STATUS_IGNORED):
    task_status.started(({s: {} for s in symbols}, {s: _quote(s, 1.0, 1e9) for s in symbols}))
    feed_is_live.set()
    while True:
        await send_chan.send({"symbol": symbols[0], "last": 1.0,
                              "ticks": [{"type": "trade", "price": "abc", "size": 1.0}]})


async def _never_live(send_chan, symbols, shm, feed_is_live, loglevel=None,
                      task_status=trio.TASK_STATUS_IGNORED):
    task_status.started(({s: {} for s in symbols}, {s: _quote(s, 1.0, 1e9) for s in symbols}))
    while True:
        await send_chan.send(_quote(symbols[0], 1.0, 1e9))
        await trio.sleep(0.001)


async def _accepts_anything(send_chan, symbols, shm, feed_is_live, loglevel=None,
                            task_status=trio.TASK_STATUS_IGNORED):
    task_status.started(({s: {} for s in symbols}, {s: _quote(s, 1.0, 1e9) for s in symbols}))
    feed_is_live.set()
    while True:
        await send_chan.send(_quote(symbols[0], 1.0, 1e9))
        await trio.sleep(0.001)


async def _slow_cancel(send_chan, symbols, shm, feed_is_live, loglevel=None,
                       task_status=trio.TASK_STATUS_IGNORED):
    try:
        await good_stream(send_chan, symbols, shm, feed_is_live, task_status=task_status)
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(1.5)


async def _backfill_late_start(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
    await trio.sleep(0.8)
    await good_backfill(sym, shm, count, task_status=task_status)


async def _backfill_unordered(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
    task_status.started(trio.CancelScope())
    rows = _bars(1_000_000, 10)[::-1]
    shm.push(rows[: shm.room_after])


async def _backfill_overrun(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
    task_status.started(trio.CancelScope())
    shm.push(_bars(1_000_000, 100))


@pytest.mark.parametrize(
    ("override", "rule"),
    [
        ({"stream_quotes": _no_started}, "startup"),
        ({"stream_quotes": _missing_last}, "first_quotes"),
        ({"stream_quotes": _sends_early}, "nothing_before_started"),
        ({"stream_quotes": _bad_tick}, "tick_schema"),
        ({"stream_quotes": _never_live}, "feed_is_live"),
        ({"stream_quotes": _accepts_anything}, "unknown_symbol"),
        ({"stream_quotes": _slow_cancel}, "cancellation"),
        ({"backfill_bars": _backfill_late_start}, "backfill_started"),
        ({"backfill_bars": _backfill_unordered}, "backfill_rows"),
        ({"backfill_bars": _backfill_overrun}, "backfill_bounds"),
        ({"ohlc_dtype": np.dtype([("time", "i8"), ("close", "f8")])}, "surface"),
    ],
)
async def test_a_provider_breaking_one_rule_fails_that_rule(override, rule):
    report = await run_check(make(**override))
    assert not report.ok
    assert rule in report.failed(), report.format()
    assert f"FAIL  {rule}" in report.format()


async def test_the_tick_schema_failure_names_provider_symbol_and_field():
    report = await run_check(make(stream_quotes=_bad_tick))
    detail = next(r.detail for r in report.results if r.rule == "tick_schema")
    assert "fake_provider" in detail
    assert "'aaa'" in detail
    assert "ticks[0].price" in detail


def test_loading_a_missing_or_broken_provider_names_it(tmp_path):
    with pytest.raises(ProviderError, match="no provider module named 'nope_zz'"):
        load_provider("nope_zz")
    broken = tmp_path / "broken.py"
    broken.write_text("import numpy as np\nohlc_dtype = np.dtype([('time', 'i8')])\n")
    with pytest.raises(ProviderError, match="stream_quotes: missing"):
        load_provider(str(broken))
    crashing = tmp_path / "crashing.py"
    crashing.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(ProviderError, match="failed to import: RuntimeError: boom at import"):
        load_provider(str(crashing))
