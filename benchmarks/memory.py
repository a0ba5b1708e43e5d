"""Memory of a backtest: the peak growth of the process while this engine, then backtesting.py,
run the SMA(10/30) close-and-reverse strategy of `benchmarks/vs_peers.py` on the same seeded
one-minute bars already in memory, side by side, per bar and as a multiple of the raw bar bytes
(`ohlc_dtype`, 72 bytes a bar).

Each run is its own process: it builds the bars, warms up (imports, cached kernels), then resets
the kernel's high-water mark of its resident memory (`/proc/self/clear_refs`, Linux) and reads
it after the run, so the growth is the run's own peak over what it started with.

Run: uv run python benchmarks/memory.py [--bars 1000000] [--big 10000000]
Targets (issue 18): growth below backtesting.py's per bar on 1M bars; at most 1.3x the raw bar
bytes for a 10M-bar run (about 400k trades).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(who: str, n: int) -> dict:
    """One measured run in this process (the parent starts one per engine and size)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vs_peers import ARGS, seeded

    bars = seeded(n)
    bars["index"] = range(n)  # row numbers, as every loader writes them
    if who == "engine":
        from engine.backtests.replay import run_backtest
        from engine.strategy import load_strategy

        plain = load_strategy(ROOT / "strategies" / "sma_cross.py")
        params = {"size": 10.0, "log_bars": False}

        def run(b):
            r = run_backtest(plain, b, params=params, **ARGS)
            return r.stats["final_equity"], r.stats["num_trades"]
    else:
        from engine.backtests.peers import run_backtesting_py

        def run(b):
            r = run_backtesting_py(b)
            return r["final_equity"], r["num_trades"]
    run(seeded(3000))  # imports and compiled kernels are not the run's growth
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts from here
    before = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    equity, trades = run(bars)
    seconds = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    return {"who": who, "bars": n, "raw": n * bars.dtype.itemsize, "growth": (peak - before) * 1024,
            "equity": equity, "trades": trades, "seconds": seconds}


def measure(who: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", who, "--bars", str(n)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{who} on {n:,} bars failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def show(r: dict) -> None:
    label = "engine (sma_cross.py)" if r["who"] == "engine" else "backtesting.py"
    print(f"  {label:22s} {r['bars']:>11,} bars  growth {r['growth'] / 1e6:9,.1f} MB  "
          f"{r['growth'] / r['bars']:6.1f} B/bar  {r['growth'] / r['raw']:5.2f}x raw  "
          f"equity {r['equity']:14,.2f}  trades {r['trades']:7,d}  {r['seconds']:6.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--big", type=int, default=10_000_000,
                    help="the engine alone on this many bars (0: skip)")
    ap.add_argument("--child", choices=("engine", "backtesting"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.bars)))
        return
    print("peak growth of a backtest over the bars in memory (raw bars: 72 B/bar)")
    ours, peer = measure("engine", args.bars), measure("backtesting", args.bars)
    show(ours)
    show(peer)
    print(f"  engine / backtesting.py per bar: {ours['growth'] / peer['growth']:.2f}  "
          f"(target: below 1)")
    if args.big:
        big = measure("engine", args.big)
        show(big)
        print(f"  {args.big:,} bars: {big['growth'] / big['raw']:.2f}x the raw bar bytes "
              f"(target: at most 1.3x)")


if __name__ == "__main__":
    main()
