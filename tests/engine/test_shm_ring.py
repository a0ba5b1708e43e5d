"""Rolling segments: rows keep their absolute index across rolls, readers holding indices follow,
and the readers the engine builds on bars (ohlcv, indicator lines, signal sets) stay right."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clock import ReplayClock
from engine.dtypes import TRADE, ohlc_dtype, tick_dtype
from engine.sampler import Sampler
from engine.shm import ShmArray, ShmError
from engine.signals import SignalSet
from engine.strategy import Context


def _bars(lo: int, hi: int) -> np.ndarray:
    """Bars whose every field derives from their absolute number k (time = 60 k)."""
    k = np.arange(lo, hi)
    rows = np.zeros(len(k), dtype=ohlc_dtype)
    rows["time"] = 60 * k
    rows["open"] = rows["high"] = rows["low"] = 1.0 + k
    rows["close"] = 100.0 + np.sin(k / 7.0) * 10 + k * 0.01
    rows["volume"] = 2.0 * k
    return rows


def _ema(x: np.ndarray, n: int) -> np.ndarray:
    """EMA seeded with the first value's SMA of n, as a plain loop (the reference)."""
    out = np.full(len(x), np.nan)
    alpha = 2.0 / (n + 1)
    if len(x) < n:
        return out
    out[n - 1] = x[:n].mean()
    for i in range(n, len(x)):
        out[i] = alpha * x[i] + (1 - alpha) * out[i - 1]
    return out


def test_a_reader_holding_indices_across_a_roll_reads_the_same_rows():
    with ShmArray.create(ohlc_dtype, 100, start=0, rolling=True) as shm:
        reader = ShmArray.attach(shm.token)
        try:
            shm.push(_bars(0, 90))
            held = (70, 90)  # the reader remembers absolute rows 70..90
            before = reader.rows(*held).copy()
            epoch = reader.epoch
            shm.push(_bars(90, 120))  # does not fit: the segment keeps its newest 50 rows
            assert reader.epoch == epoch + 2
            assert reader.span() == (70, 120)
            assert (reader.first, reader.last, reader.base) == (0, 50, 70)
            assert np.array_equal(reader.rows(*held), before)
            assert list(reader.array["index"]) == list(range(70, 120))
            assert np.array_equal(reader.array["time"], 60 * np.arange(70, 120))
            with pytest.raises(ShmError, match="rows 60..80 .* holds 70..120"):
                reader.rows(60, 80)  # rolled out
            with pytest.raises(ShmError, match="not held"):
                reader.rows(110, 121)  # not written yet
            assert len(reader.window(75)) == 5
            assert reader.window(60).size == 0
        finally:
            reader.close()


def test_a_segment_that_does_not_roll_still_refuses_to_overrun():
    with ShmArray.create(ohlc_dtype, 10, start=0) as shm:
        shm.push(_bars(0, 10))
        with pytest.raises(ShmError, match="overruns"):
            shm.push(_bars(10, 11))
        assert shm.span() == (0, 10)
        assert not shm.rolling


@settings(max_examples=60, deadline=None, derandomize=True)
@given(size=st.integers(1, 40), pushes=st.lists(st.integers(0, 90), min_size=1, max_size=30),
       start=st.integers(0, 40))
def test_any_sequence_of_pushes_keeps_the_newest_rows_under_their_absolute_indices(
        size, pushes, start):
    start = min(start, size)
    with ShmArray.create(ohlc_dtype, size, start=start, rolling=True) as shm:
        total = 0
        for n in pushes:
            shm.push(_bars(total, total + n))
            total += n
            lo, hi = shm.span()
            assert hi == start + total  # every pushed row counted, rolled out or not
            assert 0 < hi - lo <= size or total == 0
            held = shm.array
            assert list(held["index"]) == list(range(lo, hi))
            assert np.array_equal(held["time"], 60 * (np.arange(lo, hi) - start))
            assert np.array_equal(shm.rows(lo, hi), held)


def test_a_five_million_row_push_into_a_small_live_segment_keeps_the_newest_rows():
    with ShmArray.create(ohlc_dtype, 4096, start=1024, rolling=True) as shm:
        shm.push(_bars(0, 5_000_000))
        assert shm.span() == (1024 + 5_000_000 - 4096, 1024 + 5_000_000)
        assert int(shm.array["time"][-1]) == 60 * 4_999_999
        assert int(shm.array["time"][0]) == 60 * (5_000_000 - 4096)
        shm.push(_bars(5_000_000, 5_000_001))  # and it goes on after
        assert int(shm.last_rows(1)["time"][0]) == 60 * 5_000_000


def test_the_sampler_pushes_millions_of_flat_bars_into_a_small_rolling_segment():
    # A trade, then one 5M seconds later: 5M one-second bars (4,999,999 flat), 4096 a push.
    with ShmArray.create(ohlc_dtype, 10_000, start=5_000, rolling=True) as shm:
        sampler = Sampler(1, [shm])
        ticks = np.zeros(2, dtype=tick_dtype)
        ticks["time"] = [1_000.0, 5_001_000.0]
        ticks["price"] = [10.0, 11.0]
        ticks["size"] = 1.0
        ticks["type"] = TRADE
        closed = sampler.fold(ticks)
        assert len(closed) == 5_000_000
        lo, hi = shm.span()
        assert hi - 5_000 == 5_000_000
        assert hi - lo <= 10_000
        assert np.array_equal(shm.array["time"], np.arange(5_001_000 - (hi - lo), 5_001_000))
        assert (shm.array["close"] == 10.0).all()


def _context(shm: ShmArray) -> Context:
    from engine.strategy import IntentLog

    return Context(symbols=["x"], timeframe=60, bars={"x": shm}, quotes={},
                   clock=ReplayClock(0.0), router=IntentLog())


def test_ohlcv_and_indicator_lines_follow_the_bars_through_many_rolls():
    closes = _bars(0, 1000)["close"]
    with ShmArray.create(ohlc_dtype, 64, start=8, rolling=True) as shm:
        shm.push(_bars(0, 5))
        ctx = _context(shm)
        ema = ctx.indicator("ema", 10)
        sma = ctx.indicator("sma", 5)
        for k in range(5, 1000):
            shm.push(_bars(k, k + 1))
            ctx.bar_closed("x")
            bars = ctx.ohlcv("x")
            assert int(bars["time"][-1]) == 60 * k
            assert len(bars) <= 64
            assert ema[-1] == pytest.approx(_ema(closes[: k + 1], 10)[-1], rel=1e-12, nan_ok=True)
            assert sma[-1] == pytest.approx(closes[k - 4 : k + 1].mean(), rel=1e-12)
        assert len(ema) == 1000
        assert ema[-2] == pytest.approx(_ema(closes, 10)[-2], rel=1e-12)
        with pytest.raises(IndexError, match="rolled out"):
            ema[0]
        assert len(ema.values) <= 64
        assert np.allclose(ema.values, _ema(closes, 10)[1000 - len(ema.values):], rtol=1e-12)


def test_a_line_left_unread_longer_than_the_bars_kept_restarts_and_says_so(caplog):
    with ShmArray.create(ohlc_dtype, 32, start=0, rolling=True) as shm:
        ctx = _context(shm)
        sma = ctx.indicator("sma", 3)
        for k in range(200):
            shm.push(_bars(k, k + 1))
            ctx.bar_closed("x")
        with caplog.at_level(logging.WARNING, logger="engine.indicators"):
            value = sma[-1]
        closes = _bars(0, 200)["close"]
        assert value == pytest.approx(closes[-3:].mean(), rel=1e-12)
        assert "not read for" in caplog.text


def test_a_signal_set_rolls_with_its_source_row_for_row():
    closes = _bars(0, 710)["close"]
    with ShmArray.create(ohlc_dtype, 50, start=10, rolling=True) as src:
        src.push(_bars(0, 20))
        with SignalSet.create(src, {"ema_8": ("ema", "close", 8)}) as sigs:
            reader = ShmArray.attach(sigs.token)
            try:
                for k in range(20, 700, 7):
                    src.push(_bars(k, k + 7))
                    sigs.update()
                    assert reader.span() == src.span()
                    assert reader.base == src.base
                    assert np.array_equal(reader.array["time"], src.array["time"])
                    lo, hi = src.span()
                    assert np.allclose(reader.array["ema_8"], _ema(closes[:hi - 10], 8)[lo - 10:],
                                       rtol=1e-12, equal_nan=True)
            finally:
                reader.close()
