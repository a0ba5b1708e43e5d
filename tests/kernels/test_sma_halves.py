"""A fresh SMA over a long series runs as two halves on two threads, and gives the single pass's
outputs and final state bit for bit (a later update continues identically), NaNs included;
inside a sweep's shared-series thread it stays one pass."""

from __future__ import annotations

import numpy as np
import pytest

from engine.kernels import _indicators
from engine.kernels._indicators import SMA
from engine.kernels._shared import SeriesPool, sharing


def series(m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, m)))
    x[rng.integers(0, m, 3)] = np.nan  # a NaN passes through the window and is forgotten
    return x


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(("m", "period", "seed"), [(600_000, 2, 1), (700_001, 10, 2),
                                                   (1_000_000, 30, 3), (650_000, 333, 4)])
def test_two_halves_give_the_single_pass_bit_for_bit(monkeypatch, exact, m, period, seed):
    x = series(m, seed)
    halves = SMA(period, exact)
    assert halves._split(x) is not None  # it does split
    got = halves.run(x)
    monkeypatch.setattr(_indicators, "PARALLEL_MIN", 10**12)
    single = SMA(period, exact)
    assert single._split(x) is None
    want = single.run(x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(halves.state, single.state)
    more = series(5000, seed + 10)
    np.testing.assert_array_equal(halves.update(more), single.update(more))


def test_no_split_for_short_series_leading_nans_or_inside_a_sweep():
    x = series(600_000, 5)
    assert SMA(10)._split(x[:1000]) is None
    lead = x.copy()
    lead[0] = np.nan
    assert SMA(10)._split(lead) is None
    with sharing(SeriesPool()):
        assert SMA(10)._split(x) is None
