"""Protective orders against backtesting.py: an SMA cross entering with a stop-loss and a
take-profit (`buy(size=10, sl=..., tp=...)` there, `ctx.buy(..., stop_loss=, take_profit=)`
here) gives the same trades, prices and final equity on the real GOOG data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine import Strategy
from engine.backtests.replay import run_backtest
from tests.conftest import shared_data_dir

DAY = 86400


class Bracket(Strategy):
    symbols = ("GOOG",)

    def on_start(self):
        fast = self.ctx.indicator("sma", 10, exact=True)
        slow = self.ctx.indicator("sma", 30, exact=True)
        self.cross = self.ctx.indicator("cross", fast, slow)

    def on_bar(self, symbol):
        if self.cross[-1] > 0 and self.ctx.position(symbol) == 0 and not self.ctx.orders(symbol):
            close = self.ctx.ohlcv(symbol)["close"][-1]
            self.ctx.buy(symbol, 10, stop_loss=close * 0.95, take_profit=close * 1.10)
        elif self.cross[-1] < 0 and self.ctx.position(symbol) > 0:
            self.ctx.close(symbol)


def _peer(bars):
    import pandas as pd
    from backtesting import Backtest
    from backtesting import Strategy as PeerStrategy
    from backtesting.lib import crossover

    from engine.backtests.peers import bars_to_frame

    def sma(values, n):
        return pd.Series(values).rolling(n).mean()

    class PeerBracket(PeerStrategy):
        def init(self):
            self.f = self.I(sma, self.data.Close, 10)
            self.s = self.I(sma, self.data.Close, 30)

        def next(self):
            if crossover(self.f, self.s) and not self.position:
                close = self.data.Close[-1]
                self.buy(size=10, sl=close * 0.95, tp=close * 1.10)
            elif crossover(self.s, self.f) and self.position:
                self.position.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(bars_to_frame(bars), PeerBracket, cash=100_000, commission=0.0,
                        finalize_trades=False).run()


def test_bracket_entries_give_backtesting_py_s_trades_and_equity():
    pytest.importorskip("backtesting")
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    from engine.datafiles import load

    bars = load(data / "GOOG.csv").bars
    ours = run_backtest(Bracket(), {"GOOG": bars}, cash=100_000)
    peer = _peer(bars)
    # Fills inside a bar are stamped with their point on the bar's path; the peer stamps the
    # bar. Compare by the bar each fill belongs to.
    mine, entry = [], None
    for f in ours.fills:
        day = int(f.time) // DAY * DAY
        if f.side == "buy":
            entry = (day, f.price)
        else:
            mine.append((*entry, day, f.price))
    theirs = [(int(t.EntryTime.value // 10**9), t.EntryPrice, int(t.ExitTime.value // 10**9),
               t.ExitPrice) for t in peer["_trades"].itertuples()]
    assert len(mine) == len(theirs) > 20
    for a, b in zip(mine, theirs, strict=True):
        assert (a[0], a[2]) == (b[0], b[2])
        assert np.allclose([a[1], a[3]], [b[1], b[3]], rtol=1e-12, atol=0), (a, b)
    assert round(ours.stats["final_equity"], 2) == round(float(peer["Equity Final [$]"]), 2)
