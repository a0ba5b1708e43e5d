"""RSI mean reversion: buy the dip with most of the account, protected by a stop-loss and a
take-profit from the moment the entry fills.

When RSI(`period`) of the close falls below `oversold` and nothing is held or working, buy with
`fraction` of the equity available (sized when the order fills, at the fill price, commission
included), with a stop-loss `stop` below and a take-profit `target` above the entry price. Exit
early at market when RSI rises above `overbought`: the protective orders are then cancelled by
the engine. Run it:

    engine backtest strategies/rsi_reversion.py --data ../shared/data/GOOG.csv \\
        --cash 100000 --commission 0.001
    engine run strategies/rsi_reversion.py --paper --timeframe 5s --duration 60 -p period=5

What to learn from it:
- `ctx.buy(symbol, "95%", stop_loss="5%", take_profit="10%")`: a size as a share of equity,
  resolved at the fill (backtesting.py's `buy(size=0.95)`), and a bracket that goes live with
  the fill, one side cancelling the other;
- `ctx.holding(symbol)` and `ctx.orders(symbol)` read the account: no cash book of its own, no
  "pending" flag (a rejected entry leaves no working order, so the next signal tries again);
- the engine derives the warm-up from the RSI (Wilder's smoothing needs several periods), so the
  first call already sees a settled value.
"""

from engine import Strategy


class RsiReversion(Strategy):
    symbols = ("aapl",)
    timeframe = "1d"

    period: int = 14
    oversold: float = 30.0
    overbought: float = 70.0
    fraction: float = 0.95  # of the equity available, at the fill
    stop: float = 0.05  # stop-loss below the entry price, as a fraction
    target: float = 0.10  # take-profit above the entry price, as a fraction

    def on_start(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction is a share of equity in (0, 1], got {self.fraction}")
        self.rsi = {s: self.ctx.indicator("rsi", self.period, symbol=s) for s in self.ctx.symbols}

    def on_bar(self, symbol: str) -> None:
        rsi = self.rsi[symbol][-1]
        held = self.ctx.holding(symbol).size
        if held == 0 and not self.ctx.orders(symbol) and rsi < self.oversold:
            self.log("%s RSI %.1f: buy %.0f%% of equity", symbol, rsi, self.fraction * 100)
            self.ctx.buy(symbol, f"{self.fraction:.2%}", stop_loss=f"{self.stop:.2%}",
                         take_profit=f"{self.target:.2%}")
        elif held > 0 and rsi > self.overbought:
            self.log("%s RSI %.1f: take the rebound", symbol, rsi)
            self.ctx.close(symbol)
