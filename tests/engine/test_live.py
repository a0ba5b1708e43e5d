"""Feed, scheduler and strategies together, on trio's autojump clock and a scripted provider."""

from __future__ import annotations

import pytest
import trio

from engine import LiveClock, Strategy, run_live
from engine.feed import open_feed
from tests.engine.scripted import make_provider

T0 = 1_700_000_000.0


class Recorder(Strategy):
    symbols = ("aaa", "bbb")

    def on_start(self):
        self.quotes, self.bars, self.stopped, self.seen = [], [], False, []

    def on_quote(self, quote):
        self.quotes.append(quote)
        # No look-ahead: every visible bar ended at or before this quote's time.
        bars = self.ctx.ohlcv(quote["symbol"])
        if len(bars):
            assert bars["time"][-1] + self.ctx.timeframe <= quote["time"] + 1e-9

    def on_bar(self, symbol):
        bars = self.ctx.ohlcv(symbol)
        self.bars.append((symbol, int(bars["time"][-1])))
        assert bars["time"][-1] + self.ctx.timeframe <= self.ctx.now + 1e-9
        assert not bars.flags.writeable

    def on_stop(self):
        self.stopped = True
        self.final = {s: self.ctx.ohlcv(s).copy() for s in self.ctx.symbols}


async def test_strategies_get_every_quote_and_each_closed_bar_once(autojump_clock):
    strat = Recorder()
    result = await run_live([strat], provider=make_provider(every=0.25), symbols=["aaa", "bbb"],
                            timeframe="1s", duration=10, clock=LiveClock(T0))
    assert result.ok, result.errors
    seqs = [q["seq"] for q in strat.quotes if q["symbol"] == "aaa"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= 38
    aaa_bars = [t for s, t in strat.bars if s == "aaa"]
    assert aaa_bars == sorted(set(aaa_bars))
    assert len(aaa_bars) >= 9
    stored = [int(t) for t in strat.final["aaa"]["time"]]
    # A bar closing at the very instant the run stops may be stored but not yet delivered.
    assert aaa_bars == stored[: len(aaa_bars)]
    assert len(stored) - len(aaa_bars) <= 1
    assert strat.stopped
    # Four trades a second at prices 100+i: the bar after the first is exact.
    bar = strat.final["aaa"][1]
    assert (bar["volume"], bar["count"]) == (4.0, 4)
    assert bar["high"] - bar["low"] == 3.0


async def test_a_slow_strategy_does_not_slow_another(autojump_clock):
    class Slow(Recorder):
        async def on_quote(self, quote):
            self.quotes.append(quote)
            await trio.sleep(1.0)  # far slower than the 50 ms feed

    fast, slow = Recorder(), Slow()
    result = await run_live([fast, slow], provider=make_provider(every=0.05), symbols=["aaa"],
                            timeframe="1s", duration=20, clock=LiveClock(T0), mailbox=8)
    fast_seqs = [q["seq"] for q in fast.quotes]
    assert fast_seqs == list(range(1, len(fast_seqs) + 1))
    assert len(fast_seqs) >= 390
    slow_seqs = [q["seq"] for q in slow.quotes]
    assert slow_seqs == sorted(slow_seqs)  # coalescing keeps per-symbol order
    assert len(slow_seqs) < 40
    report = {s.name: s for s in result.strategies}
    assert report["Slow"].coalesced > 300
    assert report["Recorder"].coalesced == 0


async def test_a_failing_strategy_is_reported_and_the_other_runs_on(autojump_clock):
    class Broken(Recorder):
        def on_bar(self, symbol):
            raise ZeroDivisionError("bad math in on_bar")

    good, broken = Recorder(), Broken()
    result = await run_live([good, broken], provider=make_provider(every=0.25), symbols=["aaa"],
                            timeframe="1s", duration=6, clock=LiveClock(T0))
    assert not result.ok
    (error,) = result.errors
    assert "Broken.on_bar raised" in error
    assert "ZeroDivisionError: bad math in on_bar" in error
    assert "test_live.py" in error
    assert len(good.quotes) >= 20
    assert good.stopped


async def test_malformed_quotes_are_skipped_and_named(autojump_clock, caplog):
    strat = Recorder()
    result = await run_live([strat], provider=make_provider(every=0.25, bad_every=3),
                            symbols=["aaa"], timeframe="1s", duration=5, clock=LiveClock(T0))
    assert result.rejected >= 5
    assert all(q["seq"] % 3 for q in strat.quotes)
    assert "provider 'scripted' sent a bad quote for 'aaa': field 'ticks[0].price'" in caplog.text


async def test_history_is_resampled_and_live_bars_follow_it(autojump_clock):
    clock = LiveClock(T0 + 2)  # two seconds into a 5 s bar: history leaves it forming
    async with open_feed(make_provider(every=0.5, history_bars=20), ["aaa"], timeframe=5,
                         clock=clock) as feed:
        hist = feed.bars["aaa"].array.copy()
        assert hist["time"].tolist() == [T0 - 20 + 5 * i for i in range(4)]
        assert hist["volume"].tolist() == [3.0, 5.0, 5.0, 5.0]  # history starts mid-bar
        await trio.sleep(9)
        bars = feed.bars["aaa"].array
        assert bars["time"].tolist()[4:] == [T0, T0 + 5]
        # The first live bar continues the two history seconds of its period.
        assert bars["volume"][4] == 2.0 + 5
        assert bars["open"][4] == 50.0


async def test_an_unknown_symbol_fails_before_streaming(autojump_clock):
    from engine.feed import FeedError

    with pytest.raises(FeedError, match="unknown symbol 'zzz'"):
        await run_live([Recorder()], provider=make_provider(), symbols=["zzz"], duration=1,
                       clock=LiveClock(T0))


async def test_cancelling_a_run_stops_strategies_and_leaves_nothing(autojump_clock):
    strat = Recorder()
    with trio.move_on_after(3):
        await run_live([strat], provider=make_provider(every=0.1), symbols=["aaa"],
                       clock=LiveClock(T0))
    assert strat.stopped
    assert len(strat.quotes) >= 25
    # The autouse fixture checks /dev/shm; no task may outlive the run either.
    assert len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks) == 1
