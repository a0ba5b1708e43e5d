"""Every kernel TA-Lib has, checked against TA-Lib: random walks, walks with flat stretches, real
bars from ../shared/data (skipped when absent), contiguous and strided inputs.

Equal means: NaN in exactly the same places, and elsewhere within 1e-9 relative. A value that is
a difference of prices (a MACD line at its zero crossing, the deviation of a flat window) has no
relative precision to speak of, so an absolute 1e-12 of the input's scale also passes: any two
correct float64 implementations differ by that much there.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import talib

from engine import kernels
from engine.dtypes import ohlc_dtype

RTOL = 1e-9


def data_dir() -> Path | None:
    env = os.environ.get("ENGINE_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return path if path.is_dir() else None


def load_bars(path: Path) -> dict[str, np.ndarray]:
    """Read Open/High/Low/Close/Volume columns (any case) of a CSV into float arrays."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = {k.strip().lower(): k for k in rows[0]}
    return {
        name: np.array([float(r[cols[name]]) for r in rows])
        for name in ("open", "high", "low", "close", "volume")
    }


def assert_same(ours, theirs, scale: float) -> None:
    ours = np.asarray(ours, dtype=float)
    theirs = np.asarray(theirs, dtype=float)
    assert ours.shape == theirs.shape
    nan_ours, nan_theirs = np.isnan(ours), np.isnan(theirs)
    bad = np.flatnonzero(nan_ours != nan_theirs)
    assert bad.size == 0, (
        f"NaN placement differs first at {bad[0]}: {ours[bad[0]]} vs {theirs[bad[0]]}"
    )
    ok = ~nan_theirs
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=RTOL, atol=1e-12 * scale)


def walk(seed: int, n: int, *, flat: bool = False, log: bool = True) -> dict[str, np.ndarray]:
    """OHLC bars of a random walk (geometric, or arithmetic through zero); `flat` pins stretches
    of it (1 to 60 bars) to one value, high and low included."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=n)
    close = 100.0 * np.exp(np.cumsum(steps) * 0.01) if log else np.cumsum(steps)
    spread = np.abs(rng.normal(size=n)) * (0.5 if log else 0.3)
    high = close + spread * rng.random(n)
    low = close - spread * rng.random(n)
    if flat:
        for start in rng.integers(0, n, size=12):
            stop = min(n, start + int(rng.integers(1, 61)))
            close[start:stop] = close[start]
            high[start:stop] = close[start]
            low[start:stop] = close[start]
    return {"high": high, "low": low, "close": close}


SERIES = {
    "walk": walk(1, 5000),
    "walk_through_zero": walk(2, 5000, log=False),
    "walk_with_flats": walk(3, 5000, flat=True),
    "flats_through_zero": walk(4, 5000, flat=True, log=False),
}


def real_files() -> list:
    d = data_dir()
    if d is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason="../shared/data is not present"))]
    return sorted(d.glob("*.csv"), key=lambda p: p.name) or [
        pytest.param(None, marks=pytest.mark.skip(reason="no CSV files in ../shared/data"))
    ]


def strided(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same bars as fields of an OHLCV record array: strided views, as in shared memory."""
    rec = np.zeros(len(bars["close"]), dtype=ohlc_dtype)
    for k, v in bars.items():
        rec[k] = v
    return {k: rec[k] for k in bars}


def check_all(bars: dict[str, np.ndarray]) -> None:
    """Compare every TA-Lib kernel with ours on these bars, at several periods."""
    c, h, lo = bars["close"], bars["high"], bars["low"]
    cc = np.ascontiguousarray(c)
    scale = float(np.max(np.abs(cc)))
    for n in (2, 3, 14, 30):
        assert_same(kernels.sma(c, n), talib.SMA(cc, n), scale)
        assert_same(kernels.ema(c, n), talib.EMA(cc, n), scale)
        assert_same(kernels.wma(c, n), talib.WMA(cc, n), scale)
        assert_same(kernels.rsi(c, n), talib.RSI(cc, n), 100.0)
        assert_same(kernels.stddev(c, n, 1.5), talib.STDDEV(cc, n, 1.5), scale)
        assert_same(
            kernels.atr(h, lo, c, n), talib.ATR(*map(np.ascontiguousarray, (h, lo, c)), n), scale
        )
        assert_same(kernels.highest(c, n), talib.MAX(cc, n), scale)
        assert_same(kernels.lowest(c, n), talib.MIN(cc, n), scale)
        for ours, theirs in zip(
            kernels.bbands(c, n, 2.0, 1.5), talib.BBANDS(cc, n, 2.0, 1.5), strict=True
        ):
            assert_same(ours, theirs, scale)
    for fast, slow, signal in ((12, 26, 9), (5, 35, 5), (26, 12, 9), (3, 10, 1)):
        theirs = talib.MACD(cc, fast, slow, signal)
        for ours, t in zip(kernels.macd(c, fast, slow, signal), theirs, strict=True):
            assert_same(ours, t, scale)
    assert_same(kernels.ema(c, 1), talib.EMA(cc, 1), scale)
    assert_same(kernels.sma(c, 1), talib.SMA(cc, 1), scale)
    assert_same(
        kernels.atr(h, lo, c, 1), talib.ATR(*map(np.ascontiguousarray, (h, lo, c)), 1), scale
    )


@pytest.mark.parametrize("name", sorted(SERIES))
def test_random_series_match_talib(name):
    check_all(SERIES[name])


@pytest.mark.parametrize("name", ["walk", "walk_with_flats"])
def test_strided_inputs_match_talib(name):
    check_all(strided(SERIES[name]))


@pytest.mark.parametrize("path", real_files(), ids=lambda p: getattr(p, "name", "absent"))
def test_real_bars_match_talib(path):
    bars = load_bars(path)
    if len(bars["close"]) < 60:
        pytest.skip(f"{path.name} is too short")
    check_all(bars)


def test_long_periods_and_short_series():
    c = SERIES["walk"]["close"][:400]
    scale = float(np.max(c))
    for n in (200, 399, 400, 401, 1000):
        assert_same(kernels.sma(c, n), talib.SMA(c, n), scale)
        assert_same(kernels.ema(c, n), talib.EMA(c, n), scale)
        assert_same(kernels.wma(c, n), talib.WMA(c, n), scale)
        assert_same(kernels.highest(c, n), talib.MAX(c, n), scale)
        assert_same(kernels.stddev(c, n), talib.STDDEV(c, n), scale)
    assert kernels.sma(c[:0], 5).shape == (0,)


def test_leading_nans_are_skipped_like_talib():
    bars = walk(7, 600)
    c = bars["close"].copy()
    c[:17] = np.nan
    h, lo = bars["high"].copy(), bars["low"].copy()
    h[:20] = np.nan
    scale = float(np.nanmax(c))
    assert_same(kernels.ema(c, 10), talib.EMA(c, 10), scale)
    assert_same(kernels.sma(c, 10), talib.SMA(c, 10), scale)
    assert_same(kernels.rsi(c, 14), talib.RSI(c, 14), 100.0)
    assert_same(kernels.highest(c, 10), talib.MAX(c, 10), scale)
    assert_same(kernels.atr(h, lo, c, 14), talib.ATR(h, lo, c, 14), scale)
    for ours, theirs in zip(kernels.macd(c), talib.MACD(c), strict=True):
        assert_same(ours, theirs, scale)
    # A series that never starts is all NaN.
    assert np.isnan(kernels.ema(np.full(5, np.nan), 2)).all()


def test_long_series_stays_within_tolerance():
    """Rounding does not accumulate over a long series (the running sums are rebuilt)."""
    c = walk(11, 300_000)["close"]
    scale = float(np.max(c))
    assert_same(kernels.sma(c, 20), talib.SMA(c, 20), scale)
    assert_same(kernels.wma(c, 20), talib.WMA(c, 20), scale)
    assert_same(kernels.stddev(c, 20), talib.STDDEV(c, 20), scale)
    for ours, theirs in zip(kernels.bbands(c, 20), talib.BBANDS(c, 20), strict=True):
        assert_same(ours, theirs, scale)
