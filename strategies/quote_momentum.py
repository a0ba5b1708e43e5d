"""Quote-driven momentum: trade on the tick stream, not on bars.

On every quote, keep an exponentially weighted mid price (a fast tracker of where the book is)
and compare the newest mid with it, in basis points. When the mid runs `threshold_bps` above the
tracker while the spread is tight, buy; when it runs as far below, sell; flat positions are
re-entered only after `cooldown` seconds of the engine clock. Run it:

    engine run strategies/quote_momentum.py --duration 30 -p threshold_bps=1.5

What to learn from it:
- `on_quote(quote)` gets every quote message (or, if the strategy falls behind, the newest per
  symbol: the scheduler coalesces rather than stall the feed, and reports how many);
- a quote carries `last`, and usually `bid`/`ask`; ticks are in `quote["ticks"]`;
- `self.ctx.now` is the engine clock (epoch seconds), identical in live, paper and replay.
"""

from engine import Strategy


class QuoteMomentum(Strategy):
    symbols = ("ethusd",)

    alpha: float = 0.05          # weight of the newest mid in the tracker (0..1)
    threshold_bps: float = 2.0   # distance from the tracker that triggers a trade, in bps
    max_spread_bps: float = 5.0  # skip signals when the spread is wider than this, in bps
    size: float = 1.0
    cooldown: float = 5.0        # seconds between entries

    def on_start(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        self.tracker: dict[str, float] = {}
        self.last_entry: dict[str, float] = {}

    def on_quote(self, quote: dict) -> None:
        sym = quote["symbol"]
        bid, ask = quote.get("bid"), quote.get("ask")
        if not bid or not ask:
            return
        mid = (bid + ask) / 2
        spread_bps = (ask - bid) / mid * 1e4
        ema = self.tracker.get(sym, mid)
        self.tracker[sym] = ema + self.alpha * (mid - ema)
        move_bps = (mid - ema) / ema * 1e4
        if spread_bps > self.max_spread_bps:
            return
        if self.ctx.now - self.last_entry.get(sym, 0.0) < self.cooldown:
            return
        position = self.ctx.position(sym)
        if move_bps > self.threshold_bps and position <= 0:
            self.log(f"{sym} mid {mid:.2f} is {move_bps:.1f} bps above trend: buy {self.size:g}")
            self.ctx.close(sym)
            self.ctx.buy(sym, self.size)
            self.last_entry[sym] = self.ctx.now
        elif move_bps < -self.threshold_bps and position >= 0:
            self.log(f"{sym} mid {mid:.2f} is {-move_bps:.1f} bps below trend: sell {self.size:g}")
            self.ctx.close(sym)
            self.ctx.sell(sym, self.size)
            self.last_entry[sym] = self.ctx.now
