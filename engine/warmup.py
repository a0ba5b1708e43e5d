"""How many closed bars a strategy's signals need before they stop depending on how much history
came before them: declared by the strategy (`warmup = 200`) or derived from its indicators, in
bars of the run's finest timeframe (an indicator on a declared higher timeframe counts its
bars' worth of finest bars).

A windowed indicator (SMA, highest, Bollinger bands, ...) is exact once its window is full. A
recursive one (EMA, MACD, and Wilder's RSI and ATR) never forgets its seed entirely: it is
counted warm once the seed's weight, (1 - alpha)^n, is below `SETTLE` (1e-8), which takes
ln(1e-8) / ln(1 - alpha) bars more (about 9 periods for an EMA, 18 for Wilder's smoothing). A
session VWAP needs one whole session, a crossing the bar before. An indicator of indicators
needs its inputs' warm-up plus its own. Pure arithmetic; reads only the indicator objects.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["SETTLE", "indicator_warmup", "strategy_warmup"]

SETTLE = 1e-8


def _settle(alpha: float) -> int:
    return math.ceil(math.log(SETTLE) / math.log(1.0 - alpha))


def indicator_warmup(indicator: Any, bar_seconds: float) -> int:
    """Closed bars `indicator` needs before its newest value no longer depends on the bars
    before them (its own part; inputs that are other indicators add theirs)."""
    kind = indicator.kind
    base = int(indicator.lookback) + 1
    if kind == "ema":
        return base + _settle(2.0 / (indicator.period + 1))
    if kind in ("rsi", "atr"):
        return base + _settle(1.0 / indicator.period)
    if kind == "macd":
        slow = max(indicator.fast, indicator.slow)
        return (base + _settle(2.0 / (slow + 1)) + _settle(2.0 / (indicator.signal + 1)))
    if kind in ("cross", "crossover", "crossunder"):
        return 2  # the bar and the one before it
    if kind == "vwap":
        return base + math.ceil(indicator.session / max(bar_seconds, 1e-9))
    return base


def _source_warmup(source: Any, bar_seconds: float) -> int:
    own = indicator_warmup(source.indicator, bar_seconds)
    if not source.lines:
        return own
    return max(_source_warmup(line._src, bar_seconds) for line in source.lines) + own - 1


def strategy_warmup(strategy: Any) -> int:
    """The strategy's `warmup` when it declares one, else the most any indicator it declared
    through its Context needs (0 with none)."""
    declared = getattr(type(strategy), "warmup", None)
    if declared is not None:
        return int(declared)
    ctx = strategy.ctx
    sources = {id(s): s for s in getattr(ctx, "_sources", [])}
    if not sources:
        return 0
    return max(_in_finest(s, ctx.timeframe) for s in sources.values())


def _in_finest(source: Any, finest: int) -> int:
    """A source's warm-up in bars of the run's finest timeframe: an indicator on a higher
    timeframe needs its bars' worth of finest bars, plus a period's worth for the first higher
    bar, which may start partway through its period."""
    key = getattr(source, "key", None)
    seconds = key[1] if isinstance(key, tuple) else finest
    need = _source_warmup(source, seconds)
    ratio = max(1, seconds // max(finest, 1))
    return need * ratio + (ratio - 1)
