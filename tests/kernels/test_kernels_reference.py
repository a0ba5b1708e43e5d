"""Kernels TA-Lib lacks (z-score, VWAP, crossovers), checked against plain-numpy references that
compute every window from scratch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import kernels
from tests.conftest import shared_data_dir


def walk(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(size=n)) * 0.01)


def windows(x: np.ndarray, n: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, n)


def ref_zscore(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    w = windows(x, n)
    mean = w.mean(axis=1)
    sd = np.sqrt(((w - mean[:, None]) ** 2).mean(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out[n - 1 :] = (x[n - 1 :] - mean) / sd
    return out


def ref_session_vwap(p, v, t, session, offset):
    out = np.full(len(p), np.nan)
    sid = np.floor((t - offset) / session)
    use = (v > 0) & ~np.isnan(p)
    pv = np.where(use, p * v, 0.0)
    vv = np.where(use, v, 0.0)
    for s in np.unique(sid):
        idx = np.flatnonzero(sid == s)
        cpv, cv = np.cumsum(pv[idx]), np.cumsum(vv[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            out[idx] = np.where(cv > 0, cpv / cv, np.nan)
    return out


def ref_rolling_vwap(p, v, n):
    out = np.full(len(p), np.nan)
    use = (v > 0) & ~np.isnan(p)
    pv = windows(np.where(use, p * v, 0.0), n).sum(axis=1)
    vv = windows(np.where(use, v, 0.0), n).sum(axis=1)
    live = windows(use, n).any(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[n - 1 :] = np.where(live, pv / vv, np.nan)
    return out


def assert_close(ours, ref, rtol=1e-9):
    ours, ref = np.asarray(ours), np.asarray(ref)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(ours[ok], ref[ok], rtol=rtol, atol=0)


@pytest.mark.parametrize("n", [2, 5, 20, 100])
def test_zscore_matches_reference(n):
    x = walk(1, 3000)
    x[500:620] = x[500]  # a flat stretch: zero deviation, NaN score
    ours = kernels.zscore(x, n)
    ref = ref_zscore(x, n)
    flat = np.zeros(len(x), bool)
    flat[n - 1 :] = np.ptp(windows(x, n), axis=1) == 0
    assert np.isnan(ours[flat]).all()
    ref[flat] = np.nan
    # The score divides by a deviation that may be small next to the mean: compare where the
    # window's deviation is at least 1e-6 of its level, and loosely elsewhere.
    sd = np.full(len(x), np.nan)
    sd[n - 1 :] = windows(x, n).std(axis=1)
    sharp = ~(sd < 1e-6 * x)
    assert_close(np.where(sharp, ours, np.nan), np.where(sharp, ref, np.nan))
    assert_close(ours, ref, rtol=1e-6)


@pytest.mark.parametrize(("session", "offset"), [(86400.0, 0.0), (3600.0, 1800.0), (900.0, 0.0)])
def test_session_vwap_matches_reference(session, offset):
    rng = np.random.default_rng(2)
    n = 4000
    p = walk(3, n)
    v = rng.exponential(10.0, size=n)
    v[rng.random(n) < 0.2] = 0.0  # quiet bars trade nothing
    p[rng.random(n) < 0.05] = np.nan  # and may carry no price
    t = np.cumsum(rng.integers(1, 120, size=n)).astype(np.int64) + 1_700_000_000
    assert_close(kernels.vwap(p, v, t, session, offset), ref_session_vwap(p, v, t, session, offset))


@pytest.mark.parametrize("n", [1, 3, 20, 200])
def test_rolling_vwap_matches_reference(n):
    rng = np.random.default_rng(4)
    size = 3000
    p = walk(5, size)
    v = rng.exponential(10.0, size=size)
    v[rng.random(size) < 0.3] = 0.0
    v[1000:1300] = 0.0  # a long quiet stretch empties every window
    v[2000] = 1e9  # one huge print passing through
    assert_close(kernels.rolling_vwap(p, v, n), ref_rolling_vwap(p, v, n))


def test_cross_matches_reference():
    rng = np.random.default_rng(6)
    a = rng.normal(size=2000).cumsum()
    b = rng.normal(size=2000).cumsum()
    b[100] = a[100]  # touching is not crossing until the next bar moves through
    a[300] = np.nan
    up = np.zeros(2000, bool)
    dn = np.zeros(2000, bool)
    up[1:] = (a[1:] > b[1:]) & (a[:-1] <= b[:-1])
    dn[1:] = (a[1:] < b[1:]) & (a[:-1] >= b[:-1])
    np.testing.assert_array_equal(kernels.crossover(a, b), up)
    np.testing.assert_array_equal(kernels.crossunder(a, b), dn)
    # Both directions in one series: +1 up, -1 down, 0 elsewhere.
    np.testing.assert_array_equal(kernels.cross(a, b), up.astype(float) - dn.astype(float))
    # Against a threshold, and into a float64 output (1.0 / 0.0).
    out = np.full(2000, -1.0)
    kernels.crossover(a, 0.0, out=out)
    ref = np.zeros(2000)
    ref[1:] = (a[1:] > 0) & (a[:-1] <= 0)
    np.testing.assert_array_equal(out, ref)


def test_cross_of_a_warming_series_starts_quietly():
    x = walk(7, 200)
    fast, slow = kernels.ema(x, 5), kernels.ema(x, 30)
    crosses = kernels.crossover(fast, slow)
    assert not crosses[:30].any()  # nothing crosses while the slow average is NaN or just born


def test_highest_and_lowest_match_reference():
    x = walk(8, 2000)
    for n in (1, 2, 7, 64, 300):
        w = windows(x, n)
        hi = np.full(len(x), np.nan)
        lo = np.full(len(x), np.nan)
        hi[n - 1 :] = w.max(axis=1)
        lo[n - 1 :] = w.min(axis=1)
        np.testing.assert_array_equal(kernels.highest(x, n), hi)
        np.testing.assert_array_equal(kernels.lowest(x, n), lo)


def fsum_sma(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    for i in range(n - 1, len(x)):
        out[i] = math.fsum(x[i - n + 1:i + 1]) / n
    return out


@pytest.mark.parametrize("n", [1, 2, 7, 30, 200])
def test_exact_sma_is_the_correctly_rounded_window_mean(n):
    rng = np.random.default_rng(n)
    x = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 30_000))), 2)  # prices in cents
    x[5000:5400] = x[5000]  # a flat stretch: equal averages must compare equal
    x[20_000:20_050] *= 1e6  # a spike far above the rest passes through the window
    got = kernels.sma(x, n, exact=True)
    np.testing.assert_array_equal(got, fsum_sma(x, n))


def test_exact_sma_on_the_real_closes():
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    from engine.datafiles import load

    for path in sorted(data.glob("*.csv")):
        close = load(path).bars["close"]
        for n in (10, 30):
            np.testing.assert_array_equal(kernels.sma(close, n, exact=True), fsum_sma(close, n),
                                          err_msg=f"{path.name} sma {n}")
