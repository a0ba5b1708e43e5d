"""SignalSet: declared series kept in shared memory row for row with the bars, updated bar by bar
exactly as one full pass computes them, recomputed when history is prepended, and read in place
by another process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine import kernels
from engine.dtypes import ohlc_dtype
from engine.shm import ShmArray
from engine.signals import SignalError, SignalSet, open_signals

SPECS = {
    "ema_12": ("ema", "close", 12),
    "ema_26": ("ema", 26),
    "golden": ("crossover", "ema_12", "ema_26"),
    "rsi": ("rsi",),
    "macd": ("macd", "close", 12, 26, 9),
    "bb": ("bbands", 20, 2.0, 2.0),
    "atr": ("atr", 14),
    "hh": ("highest", "high", 20),
    "vwap": ("vwap", "bar_wap", "volume", "time", 3600.0),
    "z_of_rsi": ("zscore", "rsi", 10),
}


def bars(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype=ohlc_dtype)
    close = 100.0 * np.exp(np.cumsum(rng.normal(size=n)) * 0.01)
    rows["close"] = close
    rows["high"] = close + rng.random(n)
    rows["low"] = close - rng.random(n)
    rows["volume"] = rng.exponential(5.0, size=n)
    rows["bar_wap"] = close
    rows["time"] = 1_700_000_000 + 60 * np.arange(n)
    return rows


def expected(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Every declared series computed in one pass with the kernels' functions."""
    c = np.ascontiguousarray(rows["close"])
    ema12, ema26 = kernels.ema(c, 12), kernels.ema(c, 26)
    rsi = kernels.rsi(c, 14)
    line, signal, hist = kernels.macd(c, 12, 26, 9)
    up, mid, low = kernels.bbands(c, 20, 2.0, 2.0)
    return {
        "ema_12": ema12,
        "ema_26": ema26,
        "golden": kernels.crossover(ema12, ema26).astype(float),
        "rsi": rsi,
        "macd_line": line,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": up,
        "bb_middle": mid,
        "bb_lower": low,
        "atr": kernels.atr(rows["high"], rows["low"], c, 14),
        "hh": kernels.highest(rows["high"], 20),
        "vwap": kernels.vwap(rows["bar_wap"], rows["volume"], rows["time"], 3600.0),
        "z_of_rsi": kernels.zscore(rsi, 10),
    }


def assert_rows(sigs: SignalSet, rows: np.ndarray) -> None:
    a = sigs.array
    assert len(a) == len(rows)
    np.testing.assert_array_equal(a["time"], rows["time"])
    for field, ref in expected(rows).items():
        np.testing.assert_array_equal(a[field], ref, err_msg=field)


def test_bar_by_bar_updates_equal_one_pass():
    rows = bars(600)
    with ShmArray.create(ohlc_dtype, 1000, start=100) as src:
        src.push(rows[:300])
        sigs = SignalSet.create(src, SPECS)
        try:
            assert sigs.shm.first == src.first
            assert_rows(sigs, rows[:300])
            for i in range(300, 600):
                src.push(rows[i : i + 1])
                assert sigs.update() == 1
            assert sigs.update() == 0
            assert_rows(sigs, rows)
            np.testing.assert_array_equal(sigs.array["index"], src.array["index"])
        finally:
            sigs.close()


def test_prepended_history_recomputes_every_row():
    rows = bars(800, seed=1)
    with ShmArray.create(ohlc_dtype, 2000) as src:
        src.push(rows[500:])
        with SignalSet.create(src, SPECS) as sigs:
            assert_rows(sigs, rows[500:])
            src.prepend(rows[:500])
            assert sigs.update() == 800
            assert sigs.shm.first == src.first
            assert_rows(sigs, rows)


def test_upto_leaves_the_forming_bar_out_and_a_reset_recomputes():
    rows = bars(300, seed=2)
    with ShmArray.create(ohlc_dtype, 1000, start=0) as src:
        src.push(rows[:100])
        with SignalSet.create(src, {"e": ("ema", 5)}) as sigs:
            src.push(rows[100:110])
            assert sigs.update(upto=src.last - 1) == 9
            assert len(sigs.array) == 109
            assert sigs.update() == 1
            # The writer replaces its rows (a rolling buffer): same bounds, other bars.
            other = bars(110, seed=3)
            other["time"] += 86_400
            src.reset(other, start=0)
            assert sigs.update() == 110
            np.testing.assert_array_equal(sigs.array["e"], kernels.ema(other["close"], 5))


def test_an_empty_source_fills_as_bars_arrive():
    rows = bars(50, seed=4)
    with ShmArray.create(ohlc_dtype, 100) as src, SignalSet.create(src, {"s": ("sma", 3)}) as sigs:
        assert len(sigs.array) == 0
        src.push(rows)
        sigs.on_bars([], ["sym"])
        np.testing.assert_array_equal(sigs.array["s"], kernels.sma(rows["close"], 3))


def test_reads_a_read_only_source_from_its_token():
    rows = bars(400, seed=5)
    with ShmArray.create(ohlc_dtype, 1000) as src:
        src.push(rows)
        reader = ShmArray.attach(src.token)
        try:
            with SignalSet.create(reader, SPECS) as sigs:
                assert_rows(sigs, rows)
        finally:
            reader.close()


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ({"x": ("nope", 3)}, "unknown kind"),
        ({"x": ("ema", "close", "open", 3)}, "reads 1 fields"),
        ({"x": ("ema", "closing", 3)}, "no field 'closing'"),
        ({"x": ("ema", "y", 3), "y": ("ema", 3)}, "no field 'y'"),
        ({"close": ("ema", 3)}, "already taken"),
        ({"m": ("sma", 3), "m_line": ("sma", 4), "m2": ("sma", 2)}, None),
        ({"m_line": ("sma", 3), "m": ("macd",)}, "already taken"),
        ({"x": ("ema", 0)}, "period"),
        ({"x": ("ema", "close", 3, 4)}, "argument"),
        ({"bad name": ("ema", 3)}, "identifier"),
        ({"x": (3,)}, "expected"),
    ],
)
def test_bad_declarations_are_refused(specs, message):
    with ShmArray.create(ohlc_dtype, 10) as src:
        if message is None:
            SignalSet.create(src, specs).close()
            return
        with pytest.raises(SignalError, match=message):
            SignalSet.create(src, specs)


async def test_open_signals_removes_its_segment():
    with ShmArray.create(ohlc_dtype, 100, start=0) as src:
        src.push(bars(60))
        async with open_signals(src, {"r": ("rsi", 5)}) as sigs:
            name = sigs.shm.name
            assert np.isfinite(sigs.array["r"][5:]).all()
        with pytest.raises(Exception, match=name):
            ShmArray.attach(sigs.token)


CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from engine import kernels
    from engine.shm import ShmArray

    tokens = json.loads(sys.stdin.readline())
    src = ShmArray.attach(tokens["bars"])
    sig = ShmArray.attach(tokens["signals"])
    def check():
        a, s = src.array, sig.array
        close = np.ascontiguousarray(a["close"])
        ok = (len(a) == len(s)
              and np.array_equal(s["index"], a["index"])
              and np.array_equal(s["ema_20"], kernels.ema(close, 20), equal_nan=True)
              and np.array_equal(s["macd_hist"], kernels.macd(close)[2], equal_nan=True))
        return ok, len(s)
    first = sig.array["ema_20"]
    print(json.dumps(check()), flush=True)
    sys.stdin.readline()  # the writer has pushed and updated meanwhile
    later = sig.array["ema_20"]
    ok, rows = check()
    print(json.dumps([ok, rows, bool(np.shares_memory(first, later)),
                      bool(np.shares_memory(later, sig.buffer))]), flush=True)
    src.close(); sig.close()
    """
)


def test_another_process_reads_the_signals_in_place():
    rows = bars(500, seed=6)
    with ShmArray.create(ohlc_dtype, 1000) as src:
        src.push(rows[:300])
        with SignalSet.create(src, {"ema_20": ("ema", 20), "macd": ("macd",)}) as sigs:
            tokens = {"bars": src.token.model_dump(), "signals": sigs.token.model_dump()}
            with subprocess.Popen(
                [sys.executable, "-c", CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            ) as child:
                child.stdin.write(json.dumps(tokens) + "\n")
                child.stdin.flush()
                assert json.loads(child.stdout.readline()) == [True, 300]
                src.push(rows[300:])
                sigs.update()
                child.stdin.write("go\n")
                child.stdin.flush()
                assert json.loads(child.stdout.readline()) == [True, 500, True, True]
                child.stdin.close()
                assert child.wait(timeout=60) == 0
