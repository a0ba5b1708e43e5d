"""Signal kernel figures on 10M bars held in a ShmArray.

For each kernel: ns per bar reading a field of the shared-memory record array in place
(strided, 72-byte rows), ns per bar on a contiguous copy of the same values, TA-Lib's ns per bar
on that contiguous copy, and the cost of a one-bar incremental update after 1k, 1M and 10M bars
of history. Every figure is the best of a few runs, outputs allocated by the call (TA-Lib's
wrapper allocates too); "into out=" is ours writing into an existing array instead. Then the
start-up cost: importing `engine` and the kernels, and the first call of every kernel with
numba's cache warm, each in a fresh interpreter.

Run: uv run python benchmarks/kernels.py [--bars 10000000] [--repeat 5]
Targets (issue 4): no kernel slower than TA-Lib on contiguous data; strided within 2.5x of
contiguous; a one-bar update under 5 us and flat in history length; importing `engine` with
all kernels cached adds under 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import talib

from engine import kernels
from engine.dtypes import ohlc_dtype
from engine.shm import ShmArray

# name, our call on a dict of series, TA-Lib's call (or None), inputs of a one-bar update
CASES = [
    (
        "sma 20",
        lambda s, **o: kernels.sma(s["close"], 20, **o),
        lambda s: talib.SMA(s["close"], 20),
    ),
    (
        "ema 20",
        lambda s, **o: kernels.ema(s["close"], 20, **o),
        lambda s: talib.EMA(s["close"], 20),
    ),
    (
        "wma 20",
        lambda s, **o: kernels.wma(s["close"], 20, **o),
        lambda s: talib.WMA(s["close"], 20),
    ),
    (
        "rsi 14",
        lambda s, **o: kernels.rsi(s["close"], 14, **o),
        lambda s: talib.RSI(s["close"], 14),
    ),
    (
        "macd 12/26/9",
        lambda s, **o: kernels.macd(s["close"], **o),
        lambda s: talib.MACD(s["close"]),
    ),
    (
        "bbands 20",
        lambda s, **o: kernels.bbands(s["close"], 20, **o),
        lambda s: talib.BBANDS(s["close"], 20),
    ),
    (
        "stddev 20",
        lambda s, **o: kernels.stddev(s["close"], 20, **o),
        lambda s: talib.STDDEV(s["close"], 20),
    ),
    (
        "atr 14",
        lambda s, **o: kernels.atr(s["high"], s["low"], s["close"], 14, **o),
        lambda s: talib.ATR(s["high"], s["low"], s["close"], 14),
    ),
    (
        "highest 20",
        lambda s, **o: kernels.highest(s["high"], 20, **o),
        lambda s: talib.MAX(s["high"], 20),
    ),
    (
        "lowest 20",
        lambda s, **o: kernels.lowest(s["low"], 20, **o),
        lambda s: talib.MIN(s["low"], 20),
    ),
    ("zscore 20", lambda s, **o: kernels.zscore(s["close"], 20, **o), None),
    (
        "vwap session",
        lambda s, **o: kernels.vwap(s["bar_wap"], s["volume"], s["time"], **o),
        None,
    ),
    (
        "rolling_vwap 20",
        lambda s, **o: kernels.rolling_vwap(s["bar_wap"], s["volume"], 20, **o),
        None,
    ),
    ("crossover", lambda s, **o: kernels.crossover(s["close"], s["open"], **o), None),
    ("cross", lambda s, **o: kernels.cross(s["close"], s["open"], **o), None),
]

# The same kernels as indicators, for the one-bar update figures.
UPDATES = [
    ("sma 20", lambda: kernels.SMA(20), ("close",)),
    ("ema 20", lambda: kernels.EMA(20), ("close",)),
    ("wma 20", lambda: kernels.WMA(20), ("close",)),
    ("rsi 14", lambda: kernels.RSI(14), ("close",)),
    ("macd 12/26/9", lambda: kernels.MACD(), ("close",)),
    ("bbands 20", lambda: kernels.BBands(20), ("close",)),
    ("stddev 20", lambda: kernels.StdDev(20), ("close",)),
    ("atr 14", lambda: kernels.ATR(14), ("high", "low", "close")),
    ("highest 20", lambda: kernels.Highest(20), ("high",)),
    ("lowest 20", lambda: kernels.Lowest(20), ("low",)),
    ("zscore 20", lambda: kernels.ZScore(20), ("close",)),
    ("vwap session", lambda: kernels.VWAP(), ("bar_wap", "volume", "time")),
    ("rolling_vwap 20", lambda: kernels.RollingVWAP(20), ("bar_wap", "volume")),
    ("crossover", lambda: kernels.CrossOver(), ("close", "open")),
    ("cross", lambda: kernels.Cross(), ("close", "open")),
]

FIELDS = ("open", "high", "low", "close", "volume", "bar_wap", "time")


def make_bars(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = np.zeros(n, dtype=ohlc_dtype)
    close = 100.0 * np.exp(np.cumsum(rng.normal(size=n)) * 0.001)
    spread = close * rng.random(n) * 0.002
    rows["open"] = close + rng.normal(size=n) * 0.01
    rows["close"] = close
    rows["high"] = close + spread
    rows["low"] = close - spread
    rows["volume"] = rng.exponential(10.0, size=n)
    rows["bar_wap"] = close
    rows["count"] = 1
    rows["time"] = 1_700_000_000 + 60 * np.arange(n)
    return rows


def best_ns(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        del result
    return best / n * 1e9


def update_us(make, fields, contig: dict, history: int, updates: int = 2000) -> float:
    updates = min(updates, history // 2)
    ind = make()
    ind.run(*(contig[f][: history - updates] for f in fields))
    values = [contig[f][history - updates : history].tolist() for f in fields]
    rows = list(zip(*values, strict=True))
    t0 = time.perf_counter()
    for row in rows:
        ind.update(*row)
    return (time.perf_counter() - t0) / updates * 1e6


STARTUP = """
import json, time
t0 = time.perf_counter()
import engine
t1 = time.perf_counter()
from engine import kernels
t2 = time.perf_counter()
import numba
t3 = time.perf_counter()
import numpy as np
x = np.linspace(100.0, 101.0, 64)
t = np.arange(64) * 60
laps = []
for cls in kernels.KINDS.values():
    ins = {1: (x,), 2: (x, x), 3: (x, x, t) if cls.kind == "vwap" else (x, x, x)}[len(cls.inputs)]
    ind = cls() if cls.kind in ("rsi", "macd", "bbands", "atr", "vwap", "crossover",
                                "crossunder", "cross") else cls(5)
    ind.run(*ins)
    laps.append(time.perf_counter())
print(json.dumps({"engine": t1 - t0, "kernels": t2 - t1, "numba": t3 - t2,
                  "first": laps[0] - t3, "rest": laps[-1] - laps[0]}))
"""


def startup(repeat: int = 3) -> dict[str, float]:
    """Best of `repeat` fresh interpreters, per step (numba's cache is warm by now)."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", STARTUP], check=True, capture_output=True, text=True
        )
        for k, v in json.loads(out.stdout).items():
            best[k] = min(best.get(k, v), v)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.bars

    shm = ShmArray.create(ohlc_dtype, n, start=0)
    try:
        shm.push(make_bars(n))
        rec = shm.array
        strided = {f: rec[f] for f in FIELDS}
        contig = {f: np.ascontiguousarray(rec[f]) for f in FIELDS}
        for f in ("high", "low", "close", "open", "bar_wap", "volume"):
            assert strided[f].strides == (ohlc_dtype.itemsize,)

        # Compile (or load from cache) every layout first.
        small_s = {f: v[:500] for f, v in strided.items()}
        small_c = {f: v[:500] for f, v in contig.items()}
        for _, ours, _ in CASES:
            ours(small_s)
            ours(small_c)
        for _, make, fields in UPDATES:
            update_us(make, fields, small_c, 500, 10)

        print(f"signal kernels, {n:,} bars in a ShmArray ({ohlc_dtype.itemsize}-byte rows)")
        print("ns per bar, best of", args.repeat)
        floor_s = best_ns(lambda: strided["close"].sum(), n, args.repeat)
        floor_c = best_ns(lambda: contig["close"].sum(), n, args.repeat)
        print(
            f"(reading one field and nothing else, numpy sum: strided {floor_s:.2f},"
            f" contiguous {floor_c:.2f}: the floor of a strided pass is memory bandwidth)"
        )
        head = (
            f"{'kernel':16s} {'strided':>8s} {'contig':>8s} {'TA-Lib':>8s} {'into out=':>10s}"
            f" {'str/con':>8s} {'con/TA':>7s}"
        )
        print(head)
        misses = []
        for name, ours, theirs in CASES:
            s = best_ns(lambda ours=ours: ours(strided), n, args.repeat)
            c = best_ns(lambda ours=ours: ours(contig), n, args.repeat)
            first = ours(small_c)
            k = len(first) if isinstance(first, tuple) else 1
            dtype = first[0].dtype if isinstance(first, tuple) else first.dtype
            outs = tuple(np.ones(n, dtype=dtype) for _ in range(k))
            out = outs if k > 1 else outs[0]
            into = best_ns(lambda ours=ours, out=out: ours(contig, out=out), n, args.repeat)
            del outs, out
            t = best_ns(lambda theirs=theirs: theirs(contig), n, args.repeat) if theirs else None
            ratio = s / c
            vs = f"{c / t:7.2f}" if t else f"{'-':>7s}"
            print(
                f"{name:16s} {s:8.2f} {c:8.2f} {t if t else float('nan'):8.2f} {into:10.2f}"
                f" {ratio:8.2f} {vs}"
            )
            if t and c > t:
                misses.append(f"{name}: contiguous {c:.2f} ns > TA-Lib {t:.2f} ns")
            if ratio > 2.5:
                misses.append(f"{name}: strided {ratio:.2f}x contiguous")

        print()
        print("one-bar update (us, numbers in, numbers out) after a history of")
        lengths = [h for h in (1_000, 1_000_000, 10_000_000) if h <= n]
        print(f"{'kernel':16s} " + " ".join(f"{h:>10,d}" for h in lengths))
        for name, make, fields in UPDATES:
            costs = [update_us(make, fields, contig, h) for h in lengths]
            print(f"{name:16s} " + " ".join(f"{c:10.2f}" for c in costs))
            if max(costs) > 5.0:
                misses.append(f"{name}: one-bar update {max(costs):.2f} us")
            if max(costs) > 1.5 * min(costs) + 0.5:
                misses.append(f"{name}: one-bar update not flat: {costs}")
    finally:
        shm.close()
        shm.unlink()

    print()
    st = startup()
    print(
        f"start-up, fresh interpreter: import engine {st['engine']:.3f} s; "
        f"from engine import kernels +{st['kernels']:.3f} s;"
    )
    print(
        f"  first kernel call +{st['numba'] + st['first']:.3f} s (importing numba "
        f"{st['numba']:.3f} s and its JIT start-up, paid once by any numba user in the "
        f"process, the sampler included);"
    )
    print(f"  the other {len(kernels.KINDS) - 1} kernels from numba's cache +{st['rest']:.3f} s")
    if st["kernels"] > 0.5:
        misses.append(f"importing the kernels adds {st['kernels']:.3f} s")
    if st["numba"] + st["first"] + st["rest"] > 0.5:
        misses.append(
            f"first use of every kernel in a fresh process adds "
            f"{st['numba'] + st['first'] + st['rest']:.3f} s, {st['numba'] + st['first']:.3f} s"
            f" of it numba's own import and start-up"
        )
    print()
    print("targets met" if not misses else "targets missed:\n  " + "\n  ".join(misses))


if __name__ == "__main__":
    main()
