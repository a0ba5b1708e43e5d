"""Relative momentum rotation: once a month, hold the strongest symbols in equal weights, each
only while its weekly trend is up.

On the first trading day of each month (the daily bar's own date, not the clock's), rank the
symbols by their return over `lookback` daily bars, keep the `top` strongest whose last weekly
close is above their `trend_weeks`-week average, and rebalance the account to equal weights of
them (`invested` of equity in all; the rest go flat). The weekly bars are built by the engine
from the daily ones. Run it:

    engine backtest strategies/momentum_rotation.py \\
        --data ../shared/data/GOOG.csv,../shared/data/NVDA.csv,../shared/data/ORCL.csv \\
        --cash 100000 --commission 0.001
    engine run strategies/momentum_rotation.py --paper --timeframe 5s --duration 60 \\
        -p lookback=10 -p rebalance=bar -p trend_filter=false

(On the simulated market a day takes a day: the second line rebalances at every 5 s bar.)

What to learn from it:
- `on_bars(symbols, timeframe)` is called once per time step with every symbol whose bar closed
  then, so a decision across symbols sees all of them at once; `timeframe` says which of the
  strategy's timeframes closed (here "1d", or "1w" when a week completes);
- `timeframes = ("1w",)` declares a higher timeframe: `ctx.ohlcv(symbol, "1w")` and indicators
  with `timeframe="1w"` read its closed bars;
- `ctx.bar_date(symbol)` is the bar's own trading day: the first of a month is one comparison;
- `ctx.rebalance({symbol: weight})` sizes every order from equity and the latest closes,
  sells first so that their cash pays for the buys, and takes what is left out to flat.
"""

from typing import Literal

from engine import Strategy


class MomentumRotation(Strategy):
    symbols = ("aapl", "msft", "nvda")
    timeframe = "1d"
    timeframes = ("1w",)

    lookback: int = 63  # daily bars of momentum (about three months of trading days)
    top: int = 2  # how many of the strongest to hold
    trend_weeks: int = 10  # weekly average a symbol's weekly close must be above
    trend_filter: bool = True
    # Of equity: the rest pays commission and price moves between sizing and the fill, which
    # a cash account at leverage 1 would otherwise refuse.
    invested: float = 0.98
    rebalance: Literal["month", "week", "bar"] = "month"

    def on_start(self) -> None:
        if self.lookback < 1 or self.top < 1:
            raise ValueError("lookback and top must be at least 1")
        # The engine derives the warm-up from the indicators declared: weeks of daily bars.
        self.trend = {s: self.ctx.indicator("sma", self.trend_weeks, symbol=s, timeframe="1w")
                      for s in self.ctx.symbols} if self.trend_filter else {}

    def on_bars(self, symbols: list[str], timeframe: str) -> None:
        if timeframe == "1w" or not self._rebalance_day(symbols[0]):  # decide on daily bars
            return
        scores = {}
        for s in symbols:  # those trading today: a symbol whose data has ended is not ranked
            closes = self.ctx.ohlcv(s)["close"]
            if len(closes) <= self.lookback or not self._trending(s):
                continue
            scores[s] = closes[-1] / closes[-1 - self.lookback] - 1.0
        best = sorted(scores, key=scores.get, reverse=True)[: self.top]
        weights = {s: self.invested / self.top for s in best}
        self.log("rebalance %s: %s", self.ctx.bar_date(symbols[0]).isoformat(),
                 ", ".join(f"{s} {scores[s]:+.1%}" for s in best) or "all flat")
        self.ctx.rebalance(weights)

    def _rebalance_day(self, symbol: str) -> bool:
        if self.rebalance == "bar" or len(self.ctx.ohlcv(symbol)) < 2:
            return self.rebalance == "bar"
        today, before = self.ctx.bar_date(symbol), self.ctx.bar_date(symbol, 1)
        if self.rebalance == "week":
            return today.isocalendar()[:2] != before.isocalendar()[:2]
        return today.month != before.month

    def _trending(self, symbol: str) -> bool:
        if not self.trend_filter:
            return True
        weeks = self.ctx.ohlcv(symbol, "1w")
        trend = self.trend[symbol]
        return len(weeks) > 0 and len(trend) > 0 and weeks["close"][-1] > trend[-1]
