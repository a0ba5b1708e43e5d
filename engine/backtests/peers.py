"""The benchmark strategy (SMA cross, close and reverse 10 units at the next open) written for
backtesting.py and backtrader, to cross-check this engine's results and speed against them.

The peers are optional (dependency group `peers`); importing this module does not import them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bars_to_frame", "run_backtesting_py", "run_backtrader"]


def bars_to_frame(bars: np.ndarray):
    """A pandas OHLCV frame indexed by UTC time, as both peers read it."""
    import pandas as pd

    index = pd.to_datetime(bars["time"], unit="s")
    return pd.DataFrame({"Open": bars["open"], "High": bars["high"], "Low": bars["low"],
                         "Close": bars["close"], "Volume": bars["volume"]}, index=index)


def run_backtesting_py(bars: np.ndarray, fast: int = 10, slow: int = 30, size: float = 10,
                       cash: float = 1_000_000, commission: float = 0.0002,
                       finalize_trades: bool = False) -> dict:
    import warnings

    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    def sma(values, n):
        import pandas as pd

        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):
        def init(self):
            self.f = self.I(sma, self.data.Close, fast)
            self.s = self.I(sma, self.data.Close, slow)

        def next(self):
            if crossover(self.f, self.s):
                self.position.close()
                self.buy(size=size)
            elif crossover(self.s, self.f):
                self.position.close()
                self.sell(size=size)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(bars_to_frame(bars), SmaCross, cash=cash, commission=commission,
                         finalize_trades=finalize_trades).run()
    trades = stats["_trades"]
    return {
        "final_equity": float(stats["Equity Final [$]"]),
        "num_trades": int(len(trades)),
        "trades": [(int(t.EntryTime.value // 10**9), float(t.EntryPrice),
                    int(t.ExitTime.value // 10**9), float(t.ExitPrice), float(t.Size))
                   for t in trades.itertuples()],
        # Its own statistics, by its own names ("Sharpe Ratio", "CAGR [%]", ...).
        "stats": {k: v for k, v in stats.items() if not k.startswith("_")},
    }


def run_backtrader(bars: np.ndarray, fast: int = 10, slow: int = 30, size: float = 10,
                   cash: float = 1_000_000, commission: float = 0.0002) -> dict:
    import backtrader as bt

    class SmaCross(bt.Strategy):
        def __init__(self):
            self.cross = bt.ind.CrossOver(bt.ind.SMA(period=fast), bt.ind.SMA(period=slow))
            self.closed = []

        def next(self):
            if self.cross > 0:
                self.close()
                self.buy(size=size)
            elif self.cross < 0:
                self.close()
                self.sell(size=size)

        def notify_trade(self, trade):
            if trade.isclosed:
                self.closed.append(trade)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=commission)
    cerebro.adddata(bt.feeds.PandasData(dataname=bars_to_frame(bars)))
    cerebro.addstrategy(SmaCross)
    strat = cerebro.run()[0]
    return {"final_equity": float(cerebro.broker.getvalue()), "num_trades": len(strat.closed)}
