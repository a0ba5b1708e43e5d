"""Two timeframes against backtrader's `resampledata`: an hourly EURUSD strategy filtered by a
daily SMA built from the same hourly bars ends at backtrader's equity with its trades.

Conventions met on both sides: a daily bar is the UTC day's hourly bars, visible from the
close of the hour that completes it, or, when the data stops early (Friday evenings), from the
close of the next bar after the gap. This engine stamps bars by their open; backtrader stamps
an intraday bar by its end and closes a resampled day when a bar stamped at its end of session
(23:59:59.999989, its own mark) arrives, so backtrader is fed each hour at its close less the
11 us of that mark. Prices are untouched; market orders fill at the next hour's open on both.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from engine.backtests.replay import run_backtest
from engine.strategy import Strategy
from tests.conftest import shared_data_dir

SIZE = 10_000
CASH = 100_000.0


class DailyFilter(Strategy):
    timeframe = "1h"
    timeframes = ("1d",)
    # Called from the first bar, as backtrader calls next() once the SMA has its five days;
    # the strategy waits for the SMA itself.
    warmup = 0
    period: int = 5

    def on_start(self):
        # exact: the correctly rounded mean, as backtrader's math.fsum average (ties matter).
        self.sma = self.ctx.indicator("sma", self.period, timeframe="1d", exact=True)
        self.daily_seen = []

    def on_bar(self, symbol, timeframe):
        if timeframe == "1d":
            self.daily_seen.append(self.ctx.bar_date(symbol, timeframe="1d"))
            return
        sma = self.sma[-1] if len(self.sma) else float("nan")
        if not sma == sma:
            return
        close = self.ctx.ohlcv(symbol)["close"][-1]
        pos = self.ctx.position(symbol)
        if pos == 0 and close > sma:
            self.ctx.buy(symbol, SIZE)
        elif pos > 0 and close < sma:
            self.ctx.close(symbol)


@pytest.fixture(scope="module")
def eurusd():
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    return data / "EURUSD.csv"


def _backtrader(path, period):
    bt = pytest.importorskip("backtrader")
    import pandas as pd

    df = pd.read_csv(path, index_col=0, parse_dates=True)
    df.index = df.index + pd.Timedelta(hours=1) - pd.Timedelta(microseconds=11)
    entries = []

    class Peer(bt.Strategy):
        def __init__(self):
            self.sma = bt.ind.SMA(self.data1.close, period=period)

        def next(self):
            close = self.data0.close[0]
            if not self.position and close > self.sma[0]:
                self.buy(size=SIZE)
            elif self.position and close < self.sma[0]:
                self.close()

        def notify_order(self, order):
            if order.status == order.Completed and order.isbuy():
                when = bt.num2date(order.executed.dt)
                entries.append((when, order.executed.price))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(CASH)
    data = bt.feeds.PandasData(dataname=df, timeframe=bt.TimeFrame.Minutes, compression=60)
    cerebro.adddata(data)
    cerebro.resampledata(data, timeframe=bt.TimeFrame.Days, compression=1)
    cerebro.addstrategy(Peer)
    cerebro.run()
    return cerebro.broker.getvalue(), entries


def test_an_hourly_strategy_with_a_daily_filter_ends_where_backtrader_does(eurusd):
    strat = DailyFilter(period=5)
    ours = run_backtest(strat, str(eurusd), cash=CASH)
    value, entries = _backtrader(eurusd, 5)
    assert len(entries) > 20  # the filter flips often enough to test something
    assert round(ours.stats["final_equity"], 2) == round(value, 2)
    # The same entries: backtrader stamps a fill at the hour's end (less its 11 us).
    mine = [(dt.datetime.fromtimestamp(f.time, dt.UTC).replace(tzinfo=None), f.price)
            for f in ours.fills if f.side == "buy"]
    assert len(mine) == len(entries)
    for (t0, p0), (t1, p1) in zip(mine, entries, strict=True):
        assert p0 == p1
        assert abs((t1 - t0).total_seconds() - 3600) < 1
    # Every whole day was seen, in order, by its date.
    assert strat.daily_seen == sorted(set(strat.daily_seen))
    assert np.all(np.diff([d.toordinal() for d in strat.daily_seen]) >= 1)
