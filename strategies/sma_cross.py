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
- the kernels read that view in place: `kernels.sma(bars["close"], n)`;
- orders go through `self.ctx.buy/sell/close`; without `--paper` they are logged as intents.
"""

from engine import Strategy, kernels


class SmaCross(Strategy):
    symbols = ("btcusd",)
    timeframe = "1s"

    fast: int = 10
    slow: int = 30
    size: float = 1.0
    short: bool = True

    def on_start(self) -> None:
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        self.log(f"SMA {self.fast}/{self.slow} cross on {', '.join(self.ctx.symbols)}")

    def on_bar(self, symbol: str) -> None:
        bars = self.ctx.ohlcv(symbol)
        if len(bars) < self.slow + 1:
            return
        close = bars["close"][-(self.slow + 1):]
        fast = kernels.sma(close, self.fast)
        slow = kernels.sma(close, self.slow)
        bar = bars[-1]
        self.log(f"{symbol} bar close {bar['close']:.2f} fast {fast[-1]:.2f} slow {slow[-1]:.2f}")
        position = self.ctx.position(symbol)
        if fast[-2] <= slow[-2] and fast[-1] > slow[-1] and position <= 0:
            self.log(f"{symbol} fast crossed above slow: go long {self.size:g}")
            self.ctx.close(symbol)
            self.ctx.buy(symbol, self.size)
        elif fast[-2] >= slow[-2] and fast[-1] < slow[-1] and position >= 0:
            self.log(f"{symbol} fast crossed below slow: "
                     + (f"go short {self.size:g}" if self.short else "go flat"))
            self.ctx.close(symbol)
            if self.short:
                self.ctx.sell(symbol, self.size)
