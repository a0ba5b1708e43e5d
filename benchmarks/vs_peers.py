"""This engine against backtrader and backtesting.py on the same SMA(10/30) close-and-reverse
strategy (10 units, next-open fills, commission 0.0002, cash 1,000,000): final equity, trades,
bars/s and the ratios, on the real data in ../shared/data and a seeded 1M-bar series.

Run: uv run python benchmarks/vs_peers.py [--bars 1000000] [--backtrader-bars 100000]
Targets (issue 6): event path >= 500k bars/s; fast path >= 20M bars/s for one run and
>= 50M bar-evaluations/s for a sweep. Issue 18: event path >= 1.5M bars/s on the 1M-bar series
(`benchmarks/memory.py` measures memory, `benchmarks/universe.py` 1,000-symbol universes).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from engine.backtests.fastpath import run_fast, sweep_fast
from engine.backtests.peers import run_backtesting_py, run_backtrader
from engine.backtests.replay import run_backtest
from engine.dtypes import ohlc_dtype
from engine.strategy import load_strategy

ROOT = Path(__file__).resolve().parents[1]
ARGS = {"cash": 1_000_000.0, "commission": 0.0002}


def seeded(n: int, seed: int = 42) -> np.ndarray:
    """One-minute bars of a seeded random walk."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.0005, n)))
    bars = np.zeros(n, dtype=ohlc_dtype)
    bars["index"] = np.arange(n)  # row numbers, as every loader writes them
    bars["time"] = 1_600_000_000 + 60 * np.arange(n)
    bars["open"] = np.r_[100.0, close[:-1]]
    bars["close"] = close
    wiggle = np.abs(rng.normal(0, 0.0003, n))
    bars["high"] = np.maximum(bars["open"], close) * (1 + wiggle)
    bars["low"] = np.minimum(bars["open"], close) * (1 - wiggle)
    bars["volume"] = 1.0
    bars["bar_wap"] = (bars["open"] + bars["high"] + bars["low"] + close) / 4
    return bars


def _agreement(ours, testing, trader) -> str:
    """Which peers this engine ends with, to the cent, when not all agree."""
    eq = round(ours.stats["final_equity"], 2)
    same = [name for name, peer in (("backtesting.py", testing), ("backtrader", trader))
            if round(peer["final_equity"], 2) == eq]
    return f"equal to {' and '.join(same)} only" if same else "DIFFERENT from both"


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--backtrader-bars", type=int, default=100_000,
                    help="backtrader runs ~8k bars/s: time it on a prefix (default 100k)")
    args = ap.parse_args()
    strat = load_strategy(ROOT / "strategies" / "sma_cross_fast.py")
    plain = load_strategy(ROOT / "strategies" / "sma_cross.py")
    plain_params = {"size": 10.0, "log_bars": False}
    run_backtest(plain, seeded(2000), params=plain_params, **ARGS)  # load cached kernels first
    run_fast(strat, seeded(2000), **ARGS)

    data = Path(os.environ.get("ENGINE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if data.is_dir():
        from engine.datafiles import load

        print("real data: final equity (engine event path | engine fast path | backtesting.py | "
              "backtrader), trades")
        for name in ("GOOG", "EURUSD", "ORCL", "NVDA", "STOXX50-2006", "BTCUSD"):
            path = data / f"{name}.csv"
            if not path.exists():
                continue
            bars = load(path).bars
            event = run_backtest(plain, bars, params=plain_params, **ARGS)
            ours = run_backtest(strat, bars, **ARGS)
            a, b = run_backtesting_py(bars), run_backtrader(bars)
            same = {round(event.stats["final_equity"], 2), round(ours.stats["final_equity"], 2),
                    round(a["final_equity"], 2), round(b["final_equity"], 2)}
            print(f"  {name:13s} {event.stats['final_equity']:14,.2f} | "
                  f"{ours.stats['final_equity']:14,.2f} | {a['final_equity']:14,.2f} | "
                  f"{b['final_equity']:14,.2f}  {ours.stats['num_trades']:4d} trades  "
                  f"{_agreement(event, a, b) if len(same) > 1 else 'equal to the cent'}")

    bars = seeded(args.bars)
    n = len(bars)
    print(f"\nseeded series, {n:,} one-minute bars")
    # Every figure is the best of three runs, each engine and peer alike. A process's first run
    # over a series this long pays one-off costs: the heap grows to hold it (2.5x the page
    # faults of a later run of the event path) and numba starts its threads (the SMA's two
    # halves). The first event-path run is printed too.
    ours, t_first = timed(run_backtest, plain, bars, params=plain_params, **ARGS)
    # (Each later run's result is dropped at once, as a loop over runs would drop it.)
    t_event = min([t_first] + [timed(run_backtest, plain, bars, params=plain_params, **ARGS)[1]
                               for _ in range(2)])
    fast, t_fast = min((timed(run_fast, strat, bars, **ARGS) for _ in range(3)),
                       key=lambda r: r[1])
    bpy, t_bpy = min((timed(run_backtesting_py, bars) for _ in range(3)), key=lambda r: r[1])
    m = min(args.backtrader_bars, n)
    btr, t_btr = min((timed(run_backtrader, bars[:m]) for _ in range(3)), key=lambda r: r[1])
    rows = [
        ("engine, event path (sma_cross.py)", ours.stats["final_equity"],
         ours.stats["num_trades"], n / t_event),
        ("engine, numba fast path", fast["final_equity"], None, n / t_fast),
        ("backtesting.py", bpy["final_equity"], bpy["num_trades"], n / t_bpy),
        (f"backtrader (first {m:,} bars)", btr["final_equity"], btr["num_trades"], m / t_btr),
    ]
    for label, eq, trades, rate in rows:
        tr = f"{trades:6d}" if trades is not None else "     -"
        print(f"  {label:36s} equity {eq:16,.2f}  trades {tr}  {rate:13,.0f} bars/s")
    print(f"  event path: {n / t_event:,.0f} bars/s (issue 18 target: 1,500,000), "
          f"{len(ours.fills):,} fills; the process's first run {n / t_first:,.0f} bars/s")
    print(f"  event path vs backtesting.py: {n / t_event / (n / t_bpy):.1f}x; "
          f"vs backtrader: {n / t_event / (m / t_btr):.1f}x; "
          f"fast path vs backtesting.py: {n / t_fast / (n / t_bpy):.0f}x")
    grid = [{"fast": f, "slow": s} for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]
    # Best of three as well: the first sweep of a process also starts its worker threads.
    t_sweep = min(timed(sweep_fast, strat, bars, grid, **ARGS)[1] for _ in range(3))
    print(f"  fast-path sweep: {len(grid)} combinations, "
          f"{len(grid) * n / t_sweep / 1e6:,.1f}M bar-evaluations/s on {os.cpu_count()} cores "
          f"(issue 18 targets: one run >= 100M bars/s, sweep >= 300M)")


if __name__ == "__main__":
    main()
