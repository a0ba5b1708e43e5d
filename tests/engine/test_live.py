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


def _gap_provider():
    """Trades each second at t+0.5; at 3.6 s it reports a disconnect, goes silent, and at 7.2 s
    replays the trades it missed (4.5, 5.5, 6.5) before reporting it is back."""
    import types

    from engine.clock import current_clock
    from engine.dtypes import ohlc_dtype
    from engine.provider import Provider

    def trade(t, px):
        return {"symbol": "aaa", "last": px, "time": t,
                "ticks": [{"type": "trade", "price": px, "size": 1.0, "time": t}]}

    async def stream_quotes(send_chan, symbols, shm, feed_is_live, loglevel=None,
                            task_status=trio.TASK_STATUS_IGNORED):
        clock = current_clock()
        task_status.started(({"aaa": {}}, {"aaa": {"symbol": "aaa", "last": 1.0, "ticks": []}}))
        feed_is_live.set()
        for k in range(4):
            await clock.sleep_until(T0 + k + 0.5)
            await send_chan.send(trade(T0 + k + 0.5, 10.0 + k))
        await clock.sleep_until(T0 + 3.6)
        await send_chan.send({"feed_status": "disconnected", "reason": "socket closed"})
        await clock.sleep_until(T0 + 7.2)
        for k in (4, 5, 6):
            await send_chan.send(dict(trade(T0 + k + 0.5, 10.0 + k), replayed=True))
        await send_chan.send({"feed_status": "gap_filled", "symbols": ["aaa"]})
        for k in range(7, 12):
            await clock.sleep_until(T0 + k + 0.5)
            await send_chan.send(trade(T0 + k + 0.5, 10.0 + k))
        await trio.sleep_forever()

    async def backfill_bars(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started(trio.CancelScope())
        await trio.lowlevel.checkpoint()

    mod = types.ModuleType("gappy")
    mod.ohlc_dtype = ohlc_dtype
    mod.stream_quotes = stream_quotes
    mod.backfill_bars = backfill_bars
    return Provider(name="gappy", module=mod)


async def test_a_disconnect_holds_bars_and_the_replayed_gap_leaves_no_hole(autojump_clock):
    class Watcher(Recorder):
        symbols = ("aaa",)

        def on_start(self):
            super().on_start()
            self.events = []

        def on_feed_status(self, event):
            self.events.append((event.status, event.symbols, round(self.ctx.now - T0, 1)))
            # While the source was down, no bar was invented for the silent seconds.
            if event.status == "gap_filled":
                self.at_gap = self.ctx.ohlcv("aaa")["time"].tolist()

    strat = Watcher()
    await run_live([strat], provider=_gap_provider(), symbols=["aaa"], timeframe="1s",
                   duration=12, clock=LiveClock(T0), history=0)
    assert [e[:2] for e in strat.events] == [("disconnected", ["aaa"]), ("gap_filled", ["aaa"])]
    assert strat.events[0][2] == 3.6
    # Bars 0..2 closed by trades and the clock before the drop; 3 stayed open while held, and
    # the replayed trades closed 3, 4, 5: every second has its own real bar, none flat.
    assert strat.at_gap == [T0 + k for k in range(6)]
    bars = strat.final["aaa"]
    assert bars["time"].tolist() == [T0 + k for k in range(len(bars))]
    assert (bars["volume"] == 1.0).all()
    assert bars["close"].tolist() == [10.0 + k for k in range(len(bars))]


async def test_a_declared_close_delay_keeps_late_arriving_trades_in_their_bar(autojump_clock):
    import types

    from engine.clock import current_clock
    from engine.dtypes import ohlc_dtype
    from engine.provider import Provider

    async def stream_quotes(send_chan, symbols, shm, feed_is_live, loglevel=None,
                            task_status=trio.TASK_STATUS_IGNORED):
        clock = current_clock()
        task_status.started(({"aaa": {"close_delay": 0.5}},
                             {"aaa": {"symbol": "aaa", "last": 1.0, "ticks": []}}))
        feed_is_live.set()
        for k in range(4):
            # Each trade happens at k + 0.9 but reaches us 0.3 s later, after its bar's end.
            await clock.sleep_until(T0 + k + 1.2)
            t = T0 + k + 0.9
            await send_chan.send({"symbol": "aaa", "last": 1.0 + k, "time": t, "ticks": [
                {"type": "trade", "price": 1.0 + k, "size": 1.0, "time": t}]})
        await trio.sleep_forever()

    async def backfill_bars(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started(trio.CancelScope())
        await trio.lowlevel.checkpoint()

    mod = types.ModuleType("laggy")
    mod.ohlc_dtype = ohlc_dtype
    mod.stream_quotes = stream_quotes
    mod.backfill_bars = backfill_bars
    async with open_feed(Provider("laggy", mod), ["aaa"], timeframe=1, clock=LiveClock(T0),
                         history=0) as feed:
        await trio.sleep(6)
        bars = feed.bars["aaa"].array
        assert feed.sampler.late_ticks == 0
        assert bars["volume"].tolist()[:4] == [1.0, 1.0, 1.0, 1.0]
        assert bars["close"].tolist()[:4] == [1.0, 2.0, 3.0, 4.0]
