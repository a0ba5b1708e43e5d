"""Property: feeding a series in chunks of any sizes, or bar by bar, gives exactly the outputs of
one full pass, for every indicator, period and series (leading NaNs and flat stretches
included). Hypothesis draws the seed of each series; a failure prints it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from engine import kernels

PERIOD = st.integers(1, 40)


def params(kind: str, draw) -> tuple:
    if kind == "sma":
        return (draw(PERIOD), draw(st.booleans()))  # (period, exact)
    if kind in ("ema", "wma", "atr", "highest", "lowest", "rolling_vwap"):
        return (draw(PERIOD),)
    if kind in ("rsi", "zscore"):
        return (draw(st.integers(2, 40)),)
    if kind == "stddev":
        return (draw(st.integers(2, 40)), draw(st.sampled_from([1.0, 2.5])))
    if kind == "bbands":
        return (draw(st.integers(2, 40)), 2.0, draw(st.sampled_from([1.0, 2.0])))
    if kind == "macd":
        return (draw(st.integers(2, 20)), draw(st.integers(2, 40)), draw(st.integers(1, 12)))
    if kind == "vwap":
        return (draw(st.sampled_from([60.0, 3600.0, 86400.0])), draw(st.sampled_from([0.0, 30.0])))
    return ()


def series(kind: str, rng: np.random.Generator, n: int, nan_head: int, flats: bool) -> list:
    close = 100.0 * np.exp(np.cumsum(rng.normal(size=n)) * 0.02)
    if flats and n:
        for start in rng.integers(0, n, size=3):
            close[start : start + int(rng.integers(1, 30))] = close[start]
    close[:nan_head] = np.nan
    if kind == "atr":
        spread = np.abs(rng.normal(size=n))
        return [close + spread, close - spread, close]
    if kind in ("vwap", "rolling_vwap"):
        volume = rng.exponential(5.0, size=n) * (rng.random(n) > 0.2)
        time = np.cumsum(rng.integers(1, 40, size=n)).astype(np.int64) * 30
        return [close, volume, time] if kind == "vwap" else [close, volume]
    if kind in ("crossover", "crossunder", "cross"):
        return [close, 100.0 * np.exp(np.cumsum(rng.normal(size=n)) * 0.02)]
    return [close]


def as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("kind", sorted(kernels.KINDS))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_chunks_and_single_bars_equal_one_pass(kind, data):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    n = data.draw(st.integers(0, 250), label="bars")
    nan_head = data.draw(st.integers(0, 12), label="leading NaNs")
    flats = data.draw(st.booleans(), label="flat stretches")
    args = params(kind, data.draw)
    note(f"kind={kind} seed={seed} bars={n} params={args}")
    rng = np.random.default_rng(seed)
    ins = series(kind, rng, n, nan_head, flats)
    cls = kernels.KINDS[kind]

    full = as_tuple(cls(*args).run(*ins))

    # In chunks of random sizes.
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=12), label="cuts"))
    bounds = [0, *cuts, n]
    chunked = cls(*args)
    parts = [
        as_tuple(chunked.update(*(x[a:b] for x in ins)))
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    for k, whole in enumerate(full):
        got = np.concatenate([p[k] for p in parts]) if parts else np.empty(0)
        np.testing.assert_array_equal(got, whole)

    # The last bars one number at a time, after a copy taken mid-series.
    tail = min(n, data.draw(st.integers(0, 25), label="single bars"))
    single = cls(*args)
    single.update(*(x[: n - tail] for x in ins))
    replay = single.copy()
    for i in range(n - tail, n):
        values = as_tuple(single.update(*(x[i].item() for x in ins)))
        for k, whole in enumerate(full):
            np.testing.assert_array_equal(np.float64(values[k]), np.float64(whole[i]))
    replayed = as_tuple(replay.update(*(x[n - tail :] for x in ins)))
    for k, whole in enumerate(full):
        np.testing.assert_array_equal(replayed[k], whole[n - tail :])
    assert single.bars == replay.bars


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("sma", (7,)),
        ("sma", (7, True)),
        ("wma", (7,)),
        ("stddev", (7, 2.0)),
        ("bbands", (7, 2.0, 2.0)),
        ("zscore", (7,)),
        ("rolling_vwap", (7,)),
        ("highest", (7,)),
        ("lowest", (40,)),
    ],
)
def test_incremental_equals_full_past_the_rebuild_cadence(kind, args):
    """Long enough for the running sums to be rebuilt many times (every 8 or 32 periods), and
    for the block scan of the extrema to take over inside chunks."""
    rng = np.random.default_rng(99)
    n = 20_000
    ins = series(kind, rng, n, 3, True)
    cls = kernels.KINDS[kind]
    full = as_tuple(cls(*args).run(*ins))
    ind = cls(*args)
    outs = [np.empty(n) for _ in full]
    cut = 0
    for size in rng.integers(1, 500, size=400):
        hi = min(n, cut + int(size))
        ind.update(*(x[cut:hi] for x in ins), out=tuple(o[cut:hi] for o in outs))
        cut = hi
    ind.update(*(x[cut:] for x in ins), out=tuple(o[cut:] for o in outs))
    for got, whole in zip(outs, full, strict=True):
        np.testing.assert_array_equal(got, whole)
