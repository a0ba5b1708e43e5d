"""Fast path and sweeps on the seeded 1M-bar series of `benchmarks/vs_peers.py`, in one run:

- the numba fast path (`strategies/sma_cross_fast.py`), one run: bars/s, beside backtesting.py
  on the same bars and the same strategy;
- the 174-combination SMA grid on the fast path: bar-evaluations/s on every core, against one
  run's rate times the cores (a sweep should never fall below it), with how many indicator
  series were computed and how many calls shared one;
- the event-path sweep (`strategies/sma_cross.py` through `engine.optimize`, worker
  processes): bar-evaluations/s, per core, and its efficiency per core (the per-core rate over
  one run's in this process; and the workers' busy share).

Run: uv run python benchmarks/sweep.py [--bars 1000000] [--event-bars 100000] [--repeat 3]
       [--only fast-run|fast-sweep]   (one part alone, e.g. under valgrind --tool=callgrind)
Targets (issue 18): one fast run >= 100M bars/s; the 174-combination sweep >= 300M
bar-evaluations/s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from vs_peers import ARGS, seeded  # noqa: E402

from engine.actors.sweep_jobs import default_workers  # noqa: E402
from engine.backtests.fastpath import run_fast, sweep_fast  # noqa: E402
from engine.strategy import load_strategy  # noqa: E402

GRID = [{"fast": f, "slow": s} for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]


def best(fn, repeat: int):
    out, t = None, float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t = min(t, time.perf_counter() - t0)
    return out, t


def _m(v: float) -> str:
    return f"{v / 1e6:,.1f}M"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--event-bars", type=int, default=100_000)
    ap.add_argument("--event-grid", type=int, default=8, help="combinations on the event path")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("fast-run", "fast-sweep"))
    args = ap.parse_args()
    strat = load_strategy(ROOT / "strategies" / "sma_cross_fast.py")
    bars = seeded(args.bars)
    n = len(bars)
    cores = default_workers()
    run_fast(strat, seeded(3000), **ARGS)  # compile (or load) first
    sweep_fast(strat, seeded(3000), GRID[:4], **ARGS)
    if args.only == "fast-run":
        run_fast(strat, bars, **ARGS)
        return
    if args.only == "fast-sweep":
        sweep_fast(strat, bars, GRID, **ARGS)
        return
    try:
        load = f"load average {os.getloadavg()[0]:.2f}"
    except OSError:
        load = "load unknown"
    print(f"seeded series, {n:,} one-minute bars; {cores} cores, {load}; best of {args.repeat}")

    one, t_one = best(lambda: run_fast(strat, bars, **ARGS), args.repeat)
    from engine.backtests.peers import run_backtesting_py

    peer, t_peer = best(lambda: run_backtesting_py(bars), 1)
    same = round(one["final_equity"], 2) == round(peer["final_equity"], 2)
    print(f"  fast path, one run      {_m(n / t_one):>9s} bars/s   backtesting.py "
          f"{n / t_peer:>11,.0f} bars/s   ratio {t_peer / t_one:,.0f}x   final equity "
          f"{'equal to the cent' if same else 'DIFFERENT'}")

    stats: dict = {}
    _, t_sweep = best(lambda: sweep_fast(strat, bars, GRID, stats=stats, **ARGS), args.repeat)
    _, t_serial = best(lambda: sweep_fast(strat, bars, GRID, workers=1, **ARGS), 1)
    evals = len(GRID) * n
    print(f"  fast-path sweep         {_m(evals / t_sweep):>9s} bar-evaluations/s on {cores} "
          f"cores ({len(GRID)} combinations; {_m(evals / t_serial)} on one): "
          f"{evals / t_sweep / (cores * n / t_one):.1f}x one run's rate times the cores; "
          f"{stats['series']} indicator series computed, {stats['reused']} calls shared one")

    from engine.backtests.optimize import optimize
    from engine.backtests.replay import run_backtest

    plain = ROOT / "strategies" / "sma_cross.py"
    small = {"btcusd": bars[: args.event_bars]}
    m = args.event_bars
    params = {"size": 10.0, "log_bars": False}
    run_backtest(plain, small, params=params, **ARGS)  # load cached kernels first
    _, t_event = best(lambda: run_backtest(plain, small, params=params, **ARGS), args.repeat)
    grid = {"fast": [5, 10, 15, 20][: max(1, args.event_grid // 2)], "slow": [30, 60],
            "size": 10.0, "log_bars": False}
    result = optimize(plain, small, grid, metric="return_pct", workers=cores, **ARGS)
    k = len(result.rows)
    rate = k * m / result.seconds
    per_core = rate / result.workers
    print(f"  event-path sweep        {rate:>11,.0f} bar-evaluations/s on {result.workers} "
          f"workers ({k} combinations of {m:,} bars, {result.seconds:.1f} s, worker start-up "
          f"included)")
    print(f"    per core {per_core:,.0f} bar-evaluations/s against one run's {m / t_event:,.0f}"
          f" bars/s here: efficiency per core {per_core / (m / t_event):.0%}; workers busy "
          f"evaluating {result.efficiency:.0%} of the time")
    print(f"  targets: one fast run >= 100M bars/s ({_m(n / t_one)}); sweep >= 300M "
          f"bar-evaluations/s ({_m(evals / t_sweep)})")


if __name__ == "__main__":
    main()
