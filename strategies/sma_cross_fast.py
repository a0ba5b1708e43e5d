"""SMA crossover in the fast-path form: the same decisions as sma_cross.py, written as a jitted
function over signal arrays so backtests and parameter sweeps run entirely inside numba.

On every cross it closes the position and opens `size` units the other way (the benchmark
strategy the peers are compared on). It also runs live and in event-driven backtests unchanged:

    engine backtest strategies/sma_cross_fast.py --data GOOG.csv --commission 0.0002
"""

import math

from numba import njit

from engine import kernels
from engine.backtests.fastpath import VectorStrategy


class SmaCrossFast(VectorStrategy):
    symbols = ("btcusd",)
    timeframe = "1m"

    fast: int = 10
    slow: int = 30
    size: float = 10.0

    @staticmethod
    def signals(bars, fast, slow, size):
        close = bars["close"]
        return kernels.sma(close, fast, exact=True), kernels.sma(close, slow, exact=True)

    @staticmethod
    @njit(cache=True)
    def decide(i, position, fast_ma, slow_ma, fast, slow, size):
        if i < 1:
            return math.nan
        f0, f1, s0, s1 = fast_ma[i - 1], fast_ma[i], slow_ma[i - 1], slow_ma[i]
        # As the `cross` indicator sma_cross.py reads: from at or below to above is up.
        if f0 <= s0 and f1 > s1:
            return size
        if f0 >= s0 and f1 < s1:
            return -size
        return math.nan
