"""A live feed never fills up: its bar and tick segments roll under strategies reading them. A replay
provider's bars close by data time: the sample hourly CSV replayed as fast as the feed takes it,
on a clock years after the data, gives exactly the file's bars and nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import trio

from engine.clock import LiveClock
from engine.feed import open_feed
from engine.provider import load_provider
from engine.strategy import Context, IntentLog
from tests.engine.scripted import make_provider

SAMPLE = Path(__file__).resolve().parents[2] / "providers" / "csvfile" / "samples" / "demo_hourly.csv"


@pytest.fixture
def csvfile():
    provider = load_provider("csvfile")
    provider.configure(speed="max")
    yield provider
    provider.configure(speed=None)


def _file_bars() -> pd.DataFrame:
    # Read independently of the provider: pandas, the file's own columns.
    df = pd.read_csv(SAMPLE)
    times = pd.to_datetime(df["Datetime"]).dt.tz_localize("UTC")
    df["time"] = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return df


async def _replay(provider, timeframe: int, bars_wanted: int):
    closed: list[str] = []
    done = trio.Event()
    # The wall clock is years past the data, as in a real `engine run`; trio's clock is mocked.
    async with open_feed(provider, [str(SAMPLE)], timeframe=timeframe, history=0,
                         clock=LiveClock()) as feed:
        assert feed.by_data_time

        def on_batch(quotes, bars, events):
            closed.extend(bars)
            if len(closed) >= bars_wanted:
                done.set()

        feed.subscribe(on_batch)
        with trio.fail_after(10 * 86400):  # mock seconds: the replay itself takes none
            await done.wait()
        # Idle a simulated week past the end of the data: no bar may close by the clock.
        await trio.sleep(7 * 86400)
        return list(closed), feed.bars[str(SAMPLE)].array.copy(), feed.sampler.late_ticks


async def test_an_hourly_replay_at_1h_gives_exactly_the_files_bars(csvfile, autojump_clock):
    want = _file_bars()
    closed, bars, late = await _replay(csvfile, 3600, len(want))
    assert len(closed) == len(bars) == len(want) == 2000
    assert late == 0
    assert np.array_equal(bars["time"], want["time"].to_numpy())
    for ours, theirs in (("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close"),
                         ("volume", "Volume")):
        assert np.allclose(bars[ours], want[theirs].to_numpy(), rtol=1e-12), ours
    ohlc4 = want[["Open", "High", "Low", "Close"]].to_numpy().mean(axis=1)
    assert np.allclose(bars["bar_wap"], ohlc4, rtol=1e-12)


async def test_a_replay_at_4h_aggregates_by_data_time(csvfile, autojump_clock):
    want = _file_bars()
    want["bucket"] = want["time"] // 14400 * 14400
    groups = want.groupby("bucket")
    closed, bars, late = await _replay(csvfile, 14400, groups.ngroups)
    assert late == 0
    assert np.array_equal(bars["time"], np.asarray(list(groups.groups)))
    assert np.allclose(bars["high"], groups["High"].max().to_numpy())
    assert np.allclose(bars["low"], groups["Low"].min().to_numpy())
    assert np.allclose(bars["close"], groups["Close"].last().to_numpy())
    assert np.allclose(bars["volume"], groups["Volume"].sum().to_numpy())


async def test_a_long_live_run_rolls_small_segments_under_a_reading_strategy(autojump_clock):
    # 8 + 24 bar rows and 64 tick rows: 600 bars and 1200 ticks roll them many times over.
    async with open_feed(make_provider(("aaa",), every=0.5), ["aaa"], timeframe=1, history=0,
                         tick_rows=64, history_rows=8, live_bars=24) as feed:
        bars = feed.bars["aaa"]
        ctx = Context(symbols=["aaa"], timeframe=1, bars=feed.bars, quotes=feed.quotes,
                      clock=feed.clock, router=IntentLog())
        sma = ctx.indicator("sma", 3)
        seen: list[np.void] = []
        done = trio.Event()

        def on_batch(quotes, closed, events):
            for _ in closed:
                ctx.bar_closed("aaa")
                newest = ctx.ohlcv("aaa")[-1].copy()
                if seen:
                    assert int(newest["time"]) == int(seen[-1]["time"]) + 1
                seen.append(newest)
                if len(seen) >= 3:
                    want = np.mean([b["close"] for b in seen[-3:]])
                    assert sma[-1] == pytest.approx(want, rel=1e-12)
            if len(seen) >= 600:
                done.set()

        feed.subscribe(on_batch)
        with trio.fail_after(3600):
            await done.wait()
        assert bars.epoch >= 2 * 30  # it rolled, again and again
        lo, hi = bars.span()
        assert hi - lo <= bars.size
        assert np.array_equal(bars.array["index"], np.arange(lo, hi))
        # Every bar after the first is two trades of 100 + i: closes rise by 2, volume 2.
        assert np.array_equal(np.diff([b["close"] for b in seen]), np.full(len(seen) - 1, 2.0))
        assert [float(b["volume"]) for b in seen[1:]] == [2.0] * (len(seen) - 1)
        t_lo, t_hi = feed.ticks.span()
        assert t_hi == feed.stats.ticks
        assert 0 < t_hi - t_lo <= 64
        assert feed.ticks.array["price"][-1] == feed.quotes["aaa"]["last"]


async def test_a_sim_session_anchored_in_the_past_closes_bars_by_its_own_time(autojump_clock):
    import providers.sim

    sim = load_provider("sim")
    sim.configure(start_time="2024-01-01T00:00:00Z", tick_rate=50)
    try:
        async with open_feed(sim, ["btcusd"], timeframe=1, history=0, clock=LiveClock()) as feed:
            assert feed.by_data_time
            done = trio.Event()
            feed.subscribe(lambda q, closed, e: feed.stats.bars >= 30 and done.set())
            with trio.fail_after(600):
                await done.wait()
            bars = feed.bars["btcusd"].array
            t0 = 1_704_067_200  # 2024-01-01T00:00:00Z
            # The clock is years later: closing by it would give millions of flat bars.
            assert np.array_equal(bars["time"], t0 + np.arange(len(bars)))
            assert feed.sampler.late_ticks == 0
    finally:
        providers.sim.reset()
