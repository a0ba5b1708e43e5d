"""A fast-path run with its indicators computed a chunk at a time beside the loop ends exactly
where the same run computed whole ends: the same fills, the same equity, bit for bit, wherever
the chunks fall and whether or not a second thread takes part. Signals it cannot plan are
computed whole, and an indicator failing in the helper thread fails the run, cleanly."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from numba import njit

from engine import kernels
from engine.backtests import _streamed
from engine.backtests.fastpath import VectorStrategy, run_fast
from engine.kernels._indicators import SMA
from engine.strategy import load_strategy
from tests.backtests.test_fastpath import COSTS, walk

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@njit(cache=False)
def _cross_up_down(i, position, a, b, size):
    if i < 1 or math.isnan(a[i - 1]) or math.isnan(b[i - 1]):
        return math.nan
    if a[i - 1] <= b[i - 1] and a[i] > b[i]:
        return size
    if a[i - 1] >= b[i - 1] and a[i] < b[i]:
        return -size
    return math.nan


class MacdAtr(VectorStrategy):
    """Several outputs of one indicator, an indicator over indicators, three bar fields, a
    bar field as a signal, and an indicator made and dropped."""

    fast: int = 6
    slow: int = 17
    size: float = 3.0

    @staticmethod
    def signals(bars, fast, slow, size):
        close = bars["close"]
        line, signal, _ = kernels.macd(close, fast, slow, 5)
        kernels.rsi(close, 9)  # not read: not computed
        atr = kernels.atr(bars["high"], bars["low"], close, 7)
        smooth = kernels.ema(atr, 4)
        return kernels.sma(line, 2, exact=True), signal, smooth, close

    @staticmethod
    @njit(cache=False)
    def decide(i, position, line, signal, smooth, close, fast, slow, size):
        if math.isnan(smooth[i]) or smooth[i] > 0.0042 * close[i]:
            return math.nan  # too wild
        return _cross_up_down(i, position, line, signal, size)


class Spread(VectorStrategy):
    """Numpy arithmetic on the averages: not planned, computed whole."""

    fast: int = 4
    slow: int = 12
    size: float = 2.0

    @staticmethod
    def signals(bars, fast, slow, size):
        if fast >= slow:
            raise ValueError(f"need fast < slow, got {fast} and {slow}")
        close = bars["close"]
        return (kernels.sma(close, fast) - kernels.sma(close, slow),)

    @staticmethod
    @njit(cache=False)
    def decide(i, position, spread, fast, slow, size):
        if i < 1 or math.isnan(spread[i - 1]):
            return math.nan
        if spread[i - 1] <= 0.0 < spread[i]:
            return size
        if spread[i - 1] >= 0.0 > spread[i]:
            return -size
        return math.nan


@pytest.fixture(scope="module")
def sma_cross_fast():
    return load_strategy(ROOT / "strategies" / "sma_cross_fast.py")


def whole(cls, bars, params, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(_streamed, "plan", lambda *a: None)
        return run_fast(cls, bars, params, **COSTS)


@pytest.mark.parametrize("cores", [1, 2])
@pytest.mark.parametrize("chunk", [1, 7, 64, 5000])
def test_streamed_run_equals_the_whole_one(sma_cross_fast, monkeypatch, chunk, cores):
    bars = walk(3000, 11)
    params = {"fast": 3, "slow": 8}
    want = whole(sma_cross_fast, bars, params, monkeypatch)
    monkeypatch.setattr(_streamed, "CHUNK", chunk)
    monkeypatch.setattr(_streamed.os, "cpu_count", lambda: cores)
    assert _streamed.plan(sma_cross_fast, bars, (3, 8, 10.0)) is not None
    got = run_fast(sma_cross_fast, bars, params, **COSTS)
    assert len(want["fills"]) > 100
    assert got["fills"].tolist() == want["fills"].tolist()
    assert got["final_equity"] == want["final_equity"]


@pytest.mark.parametrize("chunk", [5, 333])
def test_indicators_of_indicators_and_several_outputs_stream_exactly(monkeypatch, chunk):
    bars = walk(4000, 12)
    bars["high"] += np.abs(np.sin(np.arange(len(bars)))) * 0.4
    plan = _streamed.plan(MacdAtr, bars, (6, 17, 3.0))
    kinds = [type(c.indicator).__name__ for c in plan.calcs]
    assert sorted(kinds) == ["ATR", "EMA", "MACD", "SMA"]  # the RSI nobody reads is left out
    want = whole(MacdAtr, bars, None, monkeypatch)
    monkeypatch.setattr(_streamed, "CHUNK", chunk)
    got = run_fast(MacdAtr, bars, **COSTS)
    assert len(want["fills"]) > 20
    assert got["fills"].tolist() == want["fills"].tolist()
    assert got["final_equity"] == want["final_equity"]


def test_signals_it_cannot_plan_are_computed_whole(monkeypatch):
    bars = walk(3000, 13)
    assert _streamed.plan(Spread, bars, (4, 12, 2.0)) is None
    out = run_fast(Spread, bars, **COSTS)
    close = bars["close"]
    spread = kernels.sma(close, 4) - kernels.sma(close, 12)
    crosses = np.flatnonzero(((spread[:-1] <= 0) & (spread[1:] > 0))
                             | ((spread[:-1] >= 0) & (spread[1:] < 0))) + 1
    assert len(out["fills"]) > 20
    # Each cross trades at the next bar's open: the first fill one bar after the first cross.
    assert int(out["fills"][0, 0]) == crosses[0] + 1
    # An error of the strategy's own shows as itself.
    with pytest.raises(ValueError, match="need fast < slow, got 9 and 5"):
        run_fast(Spread, bars, {"fast": 9, "slow": 5}, **COSTS)


@pytest.mark.parametrize("where", ["fastpath-signals", "MainThread"])
def test_a_failing_indicator_fails_the_run_and_leaves_no_thread(sma_cross_fast, monkeypatch,
                                                                where):
    bars = walk(3000, 14)
    monkeypatch.setattr(_streamed, "CHUNK", 100)
    monkeypatch.setattr(_streamed.os, "cpu_count", lambda: 2)
    real = SMA.update
    entered = {"fastpath-signals": threading.Event(), "MainThread": threading.Event()}

    def update(self, *series, out=None):
        # Each thread takes a task before the failing one goes on: both take part.
        name = threading.current_thread().name
        entered[name].set()
        if name == where:
            raise FloatingPointError(f"the kernel broke in {name}")
        if not entered[where].wait(60):
            raise AssertionError(f"{where} never computed a chunk")
        return real(self, *series, out=out)

    monkeypatch.setattr(SMA, "update", update)
    before = threading.active_count()
    with pytest.raises(FloatingPointError, match=f"broke in {where}"):
        run_fast(sma_cross_fast, bars, {"fast": 3, "slow": 8}, **COSTS)
    assert threading.active_count() == before


def test_tracing_computes_nothing_and_refuses_arrays_use():
    from engine.kernels import _plan

    rows = _plan.Rows(("open", "close"), 10)
    with _plan.tracing() as calcs:
        fast = kernels.sma(rows["close"], 3, exact=True)
        assert isinstance(fast, _plan.Stand)
        assert calcs[0].indicator.exact
        assert calcs[0].indicator.period == 3
        for use in (lambda: fast - 1.0, lambda: np.log(fast), lambda: fast[0], lambda: len(fast),
                    lambda: fast.shape, lambda: rows["volume"], lambda: rows.dtype):
            with pytest.raises((_plan.NotPlanned, TypeError)):
                use()
    # Outside tracing an indicator over numbers computes as always.
    assert kernels.sma(np.arange(5.0), 2)[-1] == 3.5
