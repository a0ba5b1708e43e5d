"""Bars built from a known tick sequence match a hand-computed answer, at several periods."""

from __future__ import annotations

import numpy as np
import pytest

from engine.dtypes import BID, DARK_TRADE, TRADE, UTRADE, ohlc_dtype, tick_dtype
from engine.sampler import Sampler, parse_timeframe, resample_bars
from engine.shm import ShmArray


def _ticks(rows):
    out = np.zeros(len(rows), dtype=tick_dtype)
    for i, (t, px, sz, typ, sym) in enumerate(rows):
        out[i] = (0, t, px, sz, sym, typ)
    return out


@pytest.fixture
def bars():
    arrays = [ShmArray.create(ohlc_dtype, 1000, start=0) for _ in range(2)]
    yield arrays
    for a in arrays:
        a.close()
        a.unlink()


def _as_tuples(shm):
    a = shm.array
    return [(int(r["time"]), r["open"], r["high"], r["low"], r["close"], r["volume"],
             int(r["count"]), round(float(r["bar_wap"]), 9)) for r in a]


def test_trades_build_ohlcv_and_other_ticks_do_not(bars):
    s = Sampler(5, bars)
    closed = s.fold(_ticks([
        (100.0, 10.0, 1.0, TRADE, 0),
        (101.0, 12.0, 2.0, TRADE, 0),
        (101.5, 99.0, 5.0, BID, 0),        # quotes never move a bar
        (102.0, 50.0, 9.0, DARK_TRADE, 0),  # dark prints are reported, not sampled
        (103.0, 9.0, 1.0, UTRADE, 0),
        (104.9, 11.0, 4.0, TRADE, 0),
        (106.0, 13.0, 1.0, TRADE, 1),      # another symbol, its own bars
        (117.0, 14.0, 2.0, TRADE, 0),      # closes 100..105, flat 105 and 110, opens 115
    ]))
    assert closed == [0, 0, 0]
    wap = (10 * 1 + 12 * 2 + 9 * 1 + 11 * 4) / 8
    assert _as_tuples(bars[0]) == [
        (100, 10.0, 12.0, 9.0, 11.0, 8.0, 4, round(wap, 9)),
        (105, 11.0, 11.0, 11.0, 11.0, 0.0, 0, 11.0),
        (110, 11.0, 11.0, 11.0, 11.0, 0.0, 0, 11.0),
    ]
    assert len(bars[1]) == 0  # its bar is still forming
    assert s.forming(0)["time"] == 115
    assert s.forming(1)["open"] == 13.0


def test_the_clock_closes_bars_and_quiet_periods_give_flat_bars(bars):
    s = Sampler(1, bars)
    s.fold(_ticks([(10.2, 5.0, 1.0, TRADE, 0), (10.7, 6.0, 1.0, TRADE, 0)]))
    assert s.close_until(10.99) == []          # not ended yet: no look-ahead
    assert s.next_close() == 11.0
    assert s.close_until(11.0) == [0]
    assert s.close_until(13.5) == [0, 0]       # 11 and 12 were quiet
    assert _as_tuples(bars[0])[1:] == [(11, 6.0, 6.0, 6.0, 6.0, 0.0, 0, 6.0),
                                       (12, 6.0, 6.0, 6.0, 6.0, 0.0, 0, 6.0)]
    # A trade for a period already closed is late: counted, never rewrites history.
    s.fold(_ticks([(12.5, 100.0, 1.0, TRADE, 0)]))
    assert s.late_ticks == 1
    assert bars[0].array["high"].max() == 6.0


def test_bars_are_aligned_to_the_epoch_whatever_the_first_tick(bars):
    s = Sampler(60, bars)
    s.fold(_ticks([(1_700_000_059.9, 1.0, 1.0, TRADE, 0), (1_700_000_101.0, 2.0, 1.0, TRADE, 0)]))
    assert bars[0].array["time"].tolist() == [1_700_000_040]
    assert bars[0].array["time"][0] % 60 == 0


def test_a_large_batch_splits_across_the_output_buffer(bars):
    s = Sampler(1, bars, out_rows=16)
    t = np.arange(200, dtype=float) + 0.5
    s.fold(_ticks([(x, x, 1.0, TRADE, 0) for x in t]))
    arr = bars[0].array
    assert len(arr) == 199
    assert (np.diff(arr["time"]) == 1).all()
    assert (arr["open"] == arr["time"] + 0.5).all()


def test_resample_aggregates_finer_bars():
    fine = np.zeros(6, dtype=ohlc_dtype)
    fine["time"] = [0, 1, 2, 3, 4, 5]
    fine["open"] = [1, 2, 3, 4, 5, 6]
    fine["high"] = [2, 3, 9, 5, 6, 7]
    fine["low"] = [0.5, 1, 2, 3, 1, 5]
    fine["close"] = [2, 3, 4, 5, 6, 7]
    fine["volume"] = [1, 1, 2, 0, 1, 1]
    fine["count"] = [1, 1, 2, 0, 1, 1]
    fine["bar_wap"] = [1.5, 2.5, 3.5, 4.0, 5.5, 6.5]
    out = resample_bars(fine, 3)
    assert out["time"].tolist() == [0, 3]
    assert out[["open", "high", "low", "close", "volume", "count"]].tolist() == [
        (1.0, 9.0, 0.5, 4.0, 4.0, 4), (4.0, 7.0, 1.0, 7.0, 2.0, 2)]
    assert out["bar_wap"][0] == pytest.approx((1.5 + 2.5 + 2 * 3.5) / 4)


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1), ("5s", 5), ("1m", 60), ("15m", 900),
                                                ("1h", 3600), ("1d", 86400), ("30", 30)])
def test_parse_timeframe(text, seconds):
    assert parse_timeframe(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1m", "fast", "1.5m", ""])
def test_bad_timeframes_are_rejected_with_the_text(text):
    with pytest.raises(ValueError, match="timeframe"):
        parse_timeframe(text)
