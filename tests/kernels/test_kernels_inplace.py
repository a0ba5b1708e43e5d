"""Kernels read shared memory in place and write into other processes' memory; the public API's
contracts (warm-up lengths, argument checks, lazy import) hold."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from engine import kernels
from engine.dtypes import ohlc_dtype
from engine.shm import ShmArray


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


OUT_DTYPE = np.dtype(
    [
        ("index", np.int64),
        ("ema", np.float64),
        ("up", np.float64),
        ("mid", np.float64),
        ("low", np.float64),
    ]
)


def test_reads_a_shared_memory_field_without_copying_it():
    n = 1_000_000
    with ShmArray.create(ohlc_dtype, n, start=0) as shm:
        shm.push(bars(n))
        close = shm.array["close"]
        assert close.strides == (ohlc_dtype.itemsize,)
        ind = kernels.EMA(20)
        out = np.empty(n)
        ind.run(close[:100], out=out[:100])  # compile outside the measurement
        tracemalloc.start()
        try:
            ind.run(close, out=out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024, f"{peak} bytes allocated: the strided input was copied"
        np.testing.assert_array_equal(out, kernels.ema(np.ascontiguousarray(close), 20))


def test_writes_into_fields_of_another_shared_memory_array():
    n = 5000
    with (
        ShmArray.create(ohlc_dtype, n, start=0) as src,
        ShmArray.create(OUT_DTYPE, n, start=0) as dst,
    ):
        src.push(bars(n))
        dst.push(np.zeros(n, dtype=OUT_DTYPE))
        close = src.array["close"]
        got = kernels.ema(close, 20, out=dst.array["ema"])
        assert np.shares_memory(got, dst.buffer)
        bands = kernels.bbands(close, 20, out=(dst.array["up"], dst.array["mid"], dst.array["low"]))
        assert all(np.shares_memory(b, dst.buffer) for b in bands)
        c = np.ascontiguousarray(close)
        np.testing.assert_array_equal(dst.array["ema"], kernels.ema(c, 20))
        for field, ref in zip(("up", "mid", "low"), kernels.bbands(c, 20), strict=True):
            np.testing.assert_array_equal(dst.array[field], ref)


def test_reads_a_read_only_attachment():
    n = 3000
    with ShmArray.create(ohlc_dtype, n, start=0) as src:
        src.push(bars(n))
        reader = ShmArray.attach(src.token)
        try:
            a = reader.array
            assert not a.flags.writeable
            got = kernels.atr(a["high"], a["low"], a["close"], 14)
            ref = kernels.atr(
                *(np.ascontiguousarray(src.array[f]) for f in ("high", "low", "close")), 14
            )
            np.testing.assert_array_equal(got, ref)
        finally:
            reader.close()


@pytest.mark.parametrize("kind", sorted(kernels.KINDS))
def test_lookback_is_the_number_of_warm_up_nans(kind):
    cls = kernels.KINDS[kind]
    defaults = ("rsi", "macd", "bbands", "atr", "vwap", "crossover", "crossunder", "cross")
    ind = cls() if kind in defaults else cls(9)
    rows = bars(200)
    inputs = {"a": rows["close"], "b": rows["open"] + 100.0}
    ins = [inputs.get(f, rows[f] if f in rows.dtype.names else None) for f in cls.inputs]
    outs = ind.run(*ins)
    for out in outs if isinstance(outs, tuple) else (outs,):
        if out.dtype == np.bool_:
            continue
        assert np.isnan(out[: ind.lookback]).all()
        assert not np.isnan(out[ind.lookback :]).any()


def test_arguments_are_checked():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="period"):
        kernels.SMA(0)
    with pytest.raises(ValueError, match="period"):
        kernels.RSI(1)
    with pytest.raises(ValueError, match="period"):
        kernels.EMA(2.5)
    with pytest.raises(TypeError, match="takes 3 series"):
        kernels.ATR(14).update(x)
    with pytest.raises(ValueError, match="differ in length"):
        kernels.ATR(14).update(x, x[:5], x)
    with pytest.raises(ValueError, match="length 10"):
        kernels.sma(x, 3, out=np.empty(9))
    with pytest.raises(ValueError, match="3 outputs"):
        kernels.macd(x, out=np.empty(10))
    ro = np.empty(10)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        kernels.sma(x, 3, out=ro)
    with pytest.raises(ValueError, match="1-D"):
        kernels.sma(np.ones((2, 2)), 3)
    with pytest.raises(TypeError, match="numbers"):
        kernels.ATR(3).update(1.0, "2", 3.0)


def test_one_bar_updates_take_and_return_numbers():
    x = bars(100)["close"]
    ema = kernels.EMA(10)
    ema.run(x[:-1])
    value = ema.update(float(x[-1]))
    assert isinstance(value, float)
    assert value == kernels.ema(x, 10)[-1]
    macd = kernels.MACD()
    macd.run(x[:-1])
    line, signal, hist = macd.update(x[-1])
    assert (line, signal, hist) == tuple(float(o[-1]) for o in kernels.macd(x))
    assert kernels.CrossOver().update(1.0, 2.0) is False
    assert "EMA(10) after 100 bars" in repr(ema)


def test_importing_kernels_does_not_import_numba():
    """Kernels load on first use: importing the package costs nothing beyond `import engine`."""
    code = (
        "import sys, engine; before = 'numba' in sys.modules\n"
        "from engine import kernels; print(before or 'numba' not in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_public_names_are_documented():
    for name in kernels.__all__:
        obj = getattr(kernels, name)
        if name != "KINDS":
            assert obj.__doc__, f"{name} has no docstring"
    assert sorted(kernels.KINDS) == sorted(cls.kind for cls in kernels.KINDS.values())
