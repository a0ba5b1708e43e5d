"""Orders sized as a fraction of equity against backtesting.py: an SMA cross that goes long on
a cross up and short on a cross down with 95 % of the equity available and a stop-loss and
take-profit attached (`buy(size=0.95, sl=..., tp=...)` there, `ctx.buy(s, "95%",
stop_loss=..., take_profit=...)` here) gives the same trades (bars, sizes, prices) and final
equity to the cent on the real GOOG data, with a commission."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine import Strategy
from engine.backtests.replay import run_backtest
from tests.conftest import shared_data_dir

DAY = 86400
COMMISSION = 0.002


class AllIn(Strategy):
    symbols = ("GOOG",)
    short: bool = True

    def on_start(self):
        fast = self.ctx.indicator("sma", 10, exact=True)
        slow = self.ctx.indicator("sma", 30, exact=True)
        self.cross = self.ctx.indicator("cross", fast, slow)

    def on_bar(self, symbol):
        close = self.ctx.ohlcv(symbol)["close"][-1]
        if self.cross[-1] > 0:
            self.ctx.close(symbol)
            self.ctx.buy(symbol, "95%", stop_loss=close * 0.95, take_profit=close * 1.10)
        elif self.cross[-1] < 0:
            self.ctx.close(symbol)
            if self.short:
                self.ctx.sell(symbol, "95%", stop_loss=close * 1.05, take_profit=close * 0.90)


def _peer(bars, short):
    import pandas as pd
    from backtesting import Backtest
    from backtesting import Strategy as PeerStrategy
    from backtesting.lib import crossover

    from engine.backtests.peers import bars_to_frame

    def sma(values, n):
        return pd.Series(values).rolling(n).mean()

    class PeerAllIn(PeerStrategy):
        def init(self):
            self.f = self.I(sma, self.data.Close, 10)
            self.s = self.I(sma, self.data.Close, 30)

        def next(self):
            close = self.data.Close[-1]
            if crossover(self.f, self.s):
                self.position.close()
                self.buy(size=0.95, sl=close * 0.95, tp=close * 1.10)
            elif crossover(self.s, self.f):
                self.position.close()
                if short:
                    self.sell(size=0.95, sl=close * 1.05, tp=close * 0.90)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(bars_to_frame(bars), PeerAllIn, cash=100_000, commission=COMMISSION,
                        finalize_trades=False).run()


def _trades(fills):
    """(entry bar, size signed, entry price, exit bar, exit price) per round trip."""
    out, entry = [], None
    for f in fills:
        day = int(f.time) // DAY * DAY
        signed = f.size if f.side == "buy" else -f.size
        if entry is None:
            entry = (day, signed, f.price)
        else:
            assert signed == -entry[1], "every exit closes the whole entry"
            out.append((*entry, day, f.price))
            entry = None
    return out


@pytest.mark.parametrize("short", [False, True], ids=["long", "long-short"])
def test_fraction_sized_brackets_give_backtesting_py_s_trades_and_equity(short):
    pytest.importorskip("backtesting")
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    from engine.datafiles import load

    bars = load(data / "GOOG.csv").bars
    ours = run_backtest(AllIn(short=short), {"GOOG": bars}, cash=100_000,
                        commission=COMMISSION)
    peer = _peer(bars, short)
    mine = _trades(ours.fills)
    theirs = [(int(t.EntryTime.value // 10**9), int(t.Size), t.EntryPrice,
               int(t.ExitTime.value // 10**9), t.ExitPrice)
              for t in peer["_trades"].itertuples()]
    assert len(mine) == len(theirs) > 20
    for a, b in zip(mine, theirs, strict=True):
        assert (a[0], a[1], a[3]) == (b[0], b[1], b[3]), (a, b)
        assert np.allclose([a[2], a[4]], [b[2], b[4]], rtol=1e-12, atol=0), (a, b)
    # Positions still open at the end are valued at the last close on both sides.
    assert round(ours.stats["final_equity"], 2) == round(float(peer["Equity Final [$]"]), 2)
