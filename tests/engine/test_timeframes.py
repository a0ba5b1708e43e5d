"""Several timeframes and several symbols per time step: what a strategy sees, and when."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import trio

import engine
from engine.backtests.replay import BacktestError
from engine.clock import ReplayClock
from engine.dtypes import ohlc_dtype
from engine.sampler import parse_timeframe, period_start, resample_bars
from engine.scheduler import make_runner
from engine.shm import ShmArray
from engine.strategy import IntentLog, Strategy, StrategyError

T0 = int(dt.datetime(2023, 11, 13, tzinfo=dt.UTC).timestamp())  # a Monday, 00:00 UTC


def walk(n: int, period: int, start: int = T0, seed: int = 1, times=None) -> np.ndarray:
    r = np.random.default_rng(seed)
    b = np.zeros(n, dtype=ohlc_dtype)
    b["time"] = start + period * np.arange(n) if times is None else times
    c = 100 + np.cumsum(r.normal(0, 1, n))
    b["open"] = np.r_[100.0, c[:-1]]
    b["close"] = c
    b["high"] = np.maximum(b["open"], c) + r.uniform(0, 1, n)
    b["low"] = np.minimum(b["open"], c) - r.uniform(0, 1, n)
    b["volume"] = r.uniform(1, 5, n)
    b["count"] = 1
    b["bar_wap"] = (b["high"] + b["low"]) / 2
    return b


class Watcher(Strategy):
    timeframe = "1h"
    timeframes = ("1d",)
    warmup = 0

    def on_start(self):
        self.calls = []
        self.daily = self.ctx.indicator("sma", 3, timeframe="1d")

    def on_bar(self, symbol, timeframe):
        daily = self.ctx.ohlcv(symbol, "1d")
        self.calls.append((self.ctx.now, timeframe, daily.copy(), self.daily[-1]
                           if len(self.daily) else None))


def test_daily_bars_are_built_from_hourly_and_seen_only_once_closed():
    hours = walk(24 * 6 + 5, 3600)
    strat = Watcher()
    engine.backtest(strat, {"X": hours})
    daily = resample_bars(hours, 86400)
    closes = [c for c in strat.calls if c[1] == "1d"]
    assert len(closes) == 6  # the seventh day is still forming at the end
    for n, (now, _, seen, sma) in enumerate(closes, start=1):
        assert now == T0 + 86400 * n  # at the day's end, with the 23:00 bar's close
        np.testing.assert_array_equal(seen[["time", "open", "high", "low", "close"]],
                                      daily[:n][["time", "open", "high", "low", "close"]])
        np.testing.assert_allclose(seen["volume"], daily["volume"][:n])
        want = daily["close"][n - 3:n].mean() if n >= 3 else np.nan
        np.testing.assert_allclose(sma, want, equal_nan=True)
    for now, _tf, seen, _ in strat.calls:
        # No look-ahead: every visible daily bar ended by now.
        assert len(seen) == 0 or seen["time"][-1] + 86400 <= now
    # The day's own on_bar comes after the hour that completes it, in one step.
    i = next(i for i, c in enumerate(strat.calls) if c[1] == "1d")
    assert strat.calls[i - 1][1] == "1h"
    assert strat.calls[i - 1][0] == strat.calls[i][0]


class Weekly(Strategy):
    timeframe = "1d"
    timeframes = ("1w",)
    warmup = 0

    def on_start(self):
        self.weeks = []

    def on_bar(self, symbol, timeframe):
        if timeframe == "1w":
            week = self.ctx.ohlcv(symbol, "1w")[-1]
            self.weeks.append((self.ctx.bar_date(symbol), self.ctx.bar_date(symbol, 0, "1w"),
                               float(week["close"])))


def test_a_week_over_trading_days_closes_with_the_next_weeks_first_bar():
    days = np.array([T0 + 86400 * d for w in range(4) for d in range(7 * w, 7 * w + 5)])
    bars = walk(len(days), 86400, times=days)
    strat = Weekly()
    engine.backtest(strat, {"X": bars})
    weeks = resample_bars(bars, parse_timeframe("1w"))
    assert [d.weekday() for _, d, _ in strat.weeks] == [0, 0, 0]  # weeks start on Monday
    # Closed by the gap: seen first at the next Monday's close, before that day's own call.
    assert [d.weekday() for d, _, _ in strat.weeks] == [0, 0, 0]
    assert [c for _, _, c in strat.weeks] == list(weeks["close"][:3])
    assert period_start(T0 + 3 * 86400, 604800) == T0


class Pair(Strategy):
    timeframe = "1d"
    warmup = 0

    def on_start(self):
        self.steps = []

    def on_bars(self, symbols):
        self.steps.append((self.ctx.bar_date(symbols[0]).isoformat(), list(symbols)))


def test_on_bars_hears_each_time_step_once_with_every_symbol_that_closed():
    a = walk(5, 86400)
    b = walk(5, 86400, seed=2)
    b = b[[0, 1, 3, 4]]  # b has no bar on the third day
    strat = Pair()
    engine.backtest(strat, {"A": a, "B": b})
    assert strat.steps == [("2023-11-13", ["A", "B"]), ("2023-11-14", ["A", "B"]),
                           ("2023-11-15", ["A"]), ("2023-11-16", ["A", "B"]),
                           ("2023-11-17", ["A", "B"])]


class Rotator(Strategy):
    timeframe = "1d"
    warmup = 0

    def on_bars(self, symbols):
        if len(self.ctx.ohlcv("A")) == 2:
            self.ctx.rebalance({"A": 0.5, "B": 0.5})


def test_orders_placed_in_on_bars_meet_the_next_steps_bars_for_every_symbol():
    a = walk(5, 86400)
    b = walk(5, 86400, seed=2)
    result = engine.backtest(Rotator(), {"A": a, "B": b}, cash=10_000)
    fills = {f.symbol: f for f in result.fills}
    assert set(fills) == {"A", "B"}
    for sym, bars in (("A", a), ("B", b)):
        assert fills[sym].price == bars["open"][2]  # the third day's open, both symbols


class Undeclared(Strategy):
    timeframe = "1h"
    timeframes = ("1d",)

    def on_bar(self, symbol):
        self.ctx.ohlcv(symbol, "4h")


@pytest.mark.parametrize(("timeframes", "message"), [
    (("90m",), "'90m' is not a multiple of the finest timeframe 1h"),
    (("1m",), "'1m' is finer than the run's bars (1h)"),
    (("1x",), "bad timeframe '1x'"),
])
def test_a_timeframe_that_cannot_be_built_is_refused(timeframes, message):
    cls = type("Bad", (Strategy,), {"timeframe": "1h", "timeframes": timeframes})
    with pytest.raises(BacktestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        engine.backtest(cls(), {"X": walk(48, 3600)})


def test_reading_an_undeclared_timeframe_names_it():
    with pytest.raises(BacktestError, match=r"timeframe '4h' is not declared"):
        engine.backtest(Undeclared(), {"X": walk(48, 3600)})


def test_the_warm_up_of_a_daily_indicator_counts_hourly_bars():
    class Warm(Watcher):
        warmup = None

    strat = Warm()
    engine.backtest(strat, {"X": walk(24 * 8, 3600)})
    first = strat.calls[0][0]
    # SMA(3) on days: three whole days, plus up to a day for the first one to start.
    assert first == T0 + 3600 * (3 * 24 + 23)
    assert strat.calls[0][3] is not None


class Gathered(Strategy):
    timeframe = "1s"
    bar_grace = 5.0
    warmup = 0

    def on_start(self):
        self.steps = []

    def on_bars(self, symbols):
        self.steps.append((trio.current_time(), list(symbols)))


def _bars(n: int) -> np.ndarray:
    b = walk(n, 1, start=1000)
    return b


async def test_live_on_bars_waits_for_every_symbol_or_its_grace(autojump_clock):
    with ShmArray.create(ohlc_dtype, 64, start=0) as sa, \
            ShmArray.create(ohlc_dtype, 64, start=0) as sb:
        strat = Gathered()
        runner = make_runner(strat, symbols=["A", "B"], timeframe=1, bars={"A": sa, "B": sb},
                             quotes={}, clock=ReplayClock(1000.0), router=IntentLog())
        rows = _bars(3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.run)
            await trio.sleep(0.1)
            t0 = trio.current_time()
            # Both symbols close the first second: called at once.
            sa.push(rows[:1])
            sb.push(rows[:1])
            runner.deliver([], ["A", "B"])
            await trio.sleep(0.1)
            assert strat.steps == [(t0, ["A", "B"])]
            # Only A closes the next: called with A once the grace runs out.
            sa.push(rows[1:2])
            runner.deliver([], ["A"])
            await trio.sleep(1.0)
            assert len(strat.steps) == 1
            await trio.sleep(10.0)
            assert [s for _, s in strat.steps] == [["A", "B"], ["A"]]
            assert strat.steps[1][0] == pytest.approx(t0 + 0.1 + 5.0)
            # A bar of a later period ends the step gathered so far at once.
            sa.push(rows[2:3])
            runner.deliver([], ["A"])
            sb.push(rows[1:2])
            runner.deliver([], ["B"])
            await trio.sleep(0.1)
            assert [s for _, s in strat.steps][2:] == [["A"]]
            nursery.cancel_scope.cancel()


def test_a_strategy_with_timeframes_fails_to_start_live_with_the_reason():
    cls = type("Bad", (Strategy,), {"timeframe": "1s", "timeframes": ("1500ms",)})
    with ShmArray.create(ohlc_dtype, 8, start=0) as shm, pytest.raises(StrategyError,
                                                                        match="bad timeframe"):
        make_runner(cls(), symbols=["A"], timeframe=1, bars={"A": shm}, quotes={},
                    clock=ReplayClock(0.0), router=IntentLog())


def test_a_strategy_without_timeframes_or_on_bars_keeps_the_direct_bar_path():
    class Plain(Strategy):
        timeframe = "1s"

        def on_bar(self, symbol): ...

    with ShmArray.create(ohlc_dtype, 8, start=0) as a, ShmArray.create(ohlc_dtype, 8,
                                                                       start=0) as b:
        plain = make_runner(Plain(), symbols=["A", "B"], timeframe=1, bars={"A": a, "B": b},
                            quotes={}, clock=ReplayClock(0.0), router=IntentLog())
        daily = make_runner(Watcher(), symbols=["A"], timeframe=3600, bars={"A": a},
                            quotes={}, clock=ReplayClock(0.0), router=IntentLog())
    # The replay's and the live runner's fast path: on_bar straight from the loop.
    assert plain._dispatch.simple
    assert not daily._dispatch.simple
