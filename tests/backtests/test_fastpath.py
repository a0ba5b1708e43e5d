"""The fast-path sweep: every parameter set ends where its own run ends, to the bit, while each
distinct indicator series is computed once and shared read-only between the sets."""

from __future__ import annotations

import numpy as np
import pytest

from engine import kernels
from engine.backtests import fastpath
from engine.backtests.fastpath import run_fast, sweep_fast
from engine.dtypes import ohlc_dtype
from engine.kernels._shared import SeriesPool, sharing
from engine.strategy import load_strategy

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
COSTS = {"cash": 1_000_000.0, "commission": 0.0002, "slippage": 0.0001}


def walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    bars = np.zeros(n, dtype=ohlc_dtype)
    bars["time"] = 1_600_000_000 + 60 * np.arange(n)
    bars["open"] = np.r_[100.0, close[:-1]]
    bars["close"] = close
    bars["high"] = np.maximum(bars["open"], close)
    bars["low"] = np.minimum(bars["open"], close)
    bars["volume"] = 1.0
    return bars


@pytest.fixture(scope="module")
def strategy():
    return load_strategy(ROOT / "strategies" / "sma_cross_fast.py")


@pytest.mark.parametrize("seed", [1, 2])
def test_sweep_equals_each_run_and_computes_each_average_once(strategy, seed):
    bars = walk(3000, seed)
    grid = [{"fast": f, "slow": s} for f in (3, 5, 8) for s in (5, 13, 21) if f < s]
    stats: dict = {}
    got = sweep_fast(strategy, bars, grid, workers=2, stats=stats, **COSTS)
    want = [run_fast(strategy, bars, p, **COSTS)["final_equity"] for p in grid]
    assert got.tolist() == want  # bit for bit, in grid order
    periods = {p["fast"] for p in grid} | {p["slow"] for p in grid}
    assert stats["series"] == len(periods)
    assert stats["reused"] == 2 * len(grid) + 2 - len(periods)  # + the first set's typing run


def test_fills_match_the_final_equity(strategy):
    bars = walk(2000, 3)
    out = run_fast(strategy, bars, {"fast": 4, "slow": 9}, **COSTS)
    fills = out["fills"]
    assert len(fills) > 10
    cash = COSTS["cash"] - float(np.sum(fills[:, 1] * fills[:, 2] + fills[:, 3]))
    position = float(np.sum(fills[:, 1]))
    assert out["final_equity"] == pytest.approx(cash + position * bars["close"][-1], rel=1e-12)
    # Fills come at the open of the bar after a decision, with slippage against the trader.
    rows = fills[:, 0].astype(int)
    opens = bars["open"][rows]
    np.testing.assert_allclose(fills[:, 2], opens * (1 + np.sign(fills[:, 1]) * 1e-4))


@pytest.mark.parametrize("chunk", [2, 3, 7])
def test_fills_gathered_through_a_small_buffer_are_the_same(strategy, monkeypatch, chunk):
    # The loop hands its fills over a buffer at a time, stopping and resuming mid-series with
    # a position and a pending target: where it stops must not change a fill or the equity.
    bars = walk(2000, 4)
    params = {"fast": 3, "slow": 7}
    whole = run_fast(strategy, bars, params, **COSTS)
    monkeypatch.setattr(fastpath, "_FILL_CHUNK", chunk)
    pieces = run_fast(strategy, bars, params, **COSTS)
    assert len(whole["fills"]) > 20 * chunk
    assert pieces["fills"].tolist() == whole["fills"].tolist()
    assert pieces["final_equity"] == whole["final_equity"]


def test_shared_series_are_read_only_and_only_inside_a_sweep():
    close = walk(500, 4)["close"].copy()
    assert kernels.sma(close, 5) is not kernels.sma(close, 5)
    pool = SeriesPool()
    with sharing(pool):
        a = kernels.sma(close, 5, exact=True)
        assert kernels.sma(close, 5, exact=True) is a
        assert kernels.sma(close, 5) is not a  # other arguments, another series
        assert kernels.sma(close.copy(), 5, exact=True) is not a  # another input array
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 1.0
        out = np.empty_like(close)
        assert kernels.sma(close, 5, exact=True, out=out) is out  # out= is never shared
    np.testing.assert_array_equal(a, kernels.sma(close, 5, exact=True))
    assert kernels.sma(close, 5, exact=True) is not a
    assert (pool.misses, pool.hits) == (3, 1)
