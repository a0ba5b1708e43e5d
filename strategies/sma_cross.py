"""Moving-average crossover on closed bars: the classic trend-following starter.

Every time a bar closes, compare a fast and a slow simple moving average of the close. When the
fast one crosses above the slow one, go long `size`; when it crosses below, go short `size` (or
flat, with `-p short=false`). Run it:

    engine run strategies/sma_cross.py --duration 30
    engine run strategies/sma_cross.py --symbols ethusd --timeframe 5s -p fast=5 -p slow=20

What to learn from it:
- parameters are typed class attributes; `-p fast=5` overrides them and is validated;
- `self.ctx.ohlcv(symbol)` is a read-only view of *closed* bars in shared memory (no copy, and
  never the bar still forming, so there is no look-ahead);
- `self.ctx.indicator("sma", n)` declares a kernel line over the closed bars: `line[-1]` is the
  value at the newest closed bar, computed incrementally, identical live and in backtests; an
  indicator can read other lines (`indicator("cross", fast, slow)`);
- orders go through `self.ctx.target/buy/sell/close`; without `--paper` they are logged as
  intents.
"""

from engine import Strategy


class SmaCross(Strategy):
    symbols = ("btcusd",)
    timeframe = "1s"

    fast: int = 10
    slow: int = 30
    size: float = 1.0
    short: bool = True
    log_bars: bool = True  # a line per closed bar (turn off for long backtests)

    def on_start(self) -> None:
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        # Indicator lines compute once over history, then one bar at a time as bars close;
        # `cross` is an indicator of the two: +1 on the bar fast crosses above slow, -1 below.
        self.lines, self.cross = {}, {}
        for sym in self.ctx.symbols:
            # exact: averages equal in exact arithmetic compare equal, so a cross is not taken
            # a bar early on rounding (as backtrader computes them).
            fast = self.ctx.indicator("sma", self.fast, symbol=sym, exact=True)
            slow = self.ctx.indicator("sma", self.slow, symbol=sym, exact=True)
            self.lines[sym] = (fast, slow)
            self.cross[sym] = self.ctx.indicator("cross", fast, slow)
        self.log("SMA %d/%d cross on %s", self.fast, self.slow, ", ".join(self.ctx.symbols))

    def on_bar(self, symbol: str) -> None:
        direction = self.cross[symbol][-1]
        if self.log_bars:
            fast, slow = self.lines[symbol]
            self.log("%s bar close %.2f fast %.2f slow %.2f", symbol,
                     self.ctx.ohlcv(symbol)["close"][-1], fast[-1], slow[-1])
        # One order takes the position to its target: a reversal closes and reopens at once.
        if direction > 0:
            self.log("%s fast crossed above slow: go long %g", symbol, self.size)
            self.ctx.target(symbol, self.size)
        elif direction < 0:
            self.log("%s fast crossed below slow: %s", symbol,
                     f"go short {self.size:g}" if self.short else "go flat")
            self.ctx.target(symbol, -self.size if self.short else 0.0)
