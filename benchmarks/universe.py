"""A universe: 1,000 symbols x 2,520 daily bars (ten years) replayed through a cross-sectional
strategy whose `on_bars` is called once per time step with every symbol. Prints bar-events/s
(symbol-bars replayed per second) and the peak growth of the process over the bars in memory
(72 bytes a bar), for a strategy that does nothing and for a momentum rotation that ranks every
symbol each quarter and rebalances to the strongest.

Each strategy runs in its own process: it builds the bars, warms up on a small universe
(imports, cached kernels), resets the kernel's high-water mark of its resident memory
(`/proc/self/clear_refs`, Linux) and reads it after the run.

Run: uv run python benchmarks/universe.py [--symbols 1000] [--bars 2520]
Targets (issue 18): at least 1M bar-events/s, growth at most 2x the raw bar bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engine import Strategy
from engine.dtypes import ohlc_dtype

DAY = 86400


class Idle(Strategy):
    """Hears every step and does nothing: the replay's own cost."""

    timeframe = "1d"

    def on_bars(self, symbols: list[str]) -> None:
        pass


class Rotation(Strategy):
    """Every `every` steps, rank the symbols by their fast average over their slow one and
    hold the `top` strongest in equal weights (the rest flat)."""

    timeframe = "1d"
    fast: int = 20
    slow: int = 100
    top: int = 20
    every: int = 63

    def on_start(self) -> None:
        self.lines = {s: (self.ctx.indicator("sma", self.fast, symbol=s),
                          self.ctx.indicator("sma", self.slow, symbol=s))
                      for s in self.ctx.symbols}
        self.steps = 0

    def on_bars(self, symbols: list[str]) -> None:
        self.steps += 1
        if self.steps % self.every:
            return
        lines = self.lines
        score = {s: lines[s][0][-1] / lines[s][1][-1] for s in symbols}
        best = sorted(score, key=score.__getitem__, reverse=True)[:self.top]
        self.ctx.rebalance({s: 0.95 / self.top for s in best})


def universe(n_symbols: int, n_bars: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Seeded daily random walks, one per symbol, on the same days."""
    rng = np.random.default_rng(seed)
    times = 1_262_304_000 + DAY * np.arange(n_bars, dtype=np.int64)  # from 2010-01-01
    out = {}
    for i in range(n_symbols):
        close = 50.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.02, n_bars)))
        bars = np.zeros(n_bars, dtype=ohlc_dtype)
        bars["index"] = np.arange(n_bars)
        bars["time"] = times
        bars["open"] = np.r_[50.0, close[:-1]]
        bars["close"] = close
        wiggle = np.abs(rng.normal(0, 0.005, n_bars))
        bars["high"] = np.maximum(bars["open"], close) * (1 + wiggle)
        bars["low"] = np.minimum(bars["open"], close) * (1 - wiggle)
        bars["volume"] = 1000.0
        bars["bar_wap"] = (bars["open"] + bars["high"] + bars["low"] + close) / 4
        out[f"s{i:04d}"] = bars
    return out


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(name: str, n_symbols: int, n_bars: int) -> dict:
    from engine.backtests.replay import run_backtest

    strat = {"idle": Idle, "rotation": Rotation}[name]
    options = {"cash": 1_000_000.0, "commission": 0.0005, "bootstrap": False}
    run_backtest(strat, universe(20, 300), **options)  # imports, compiled kernels
    data = universe(n_symbols, n_bars)
    raw = sum(b.nbytes for b in data.values())
    Path("/proc/self/clear_refs").write_text("5")
    before = _kb("VmRSS")
    t0 = time.perf_counter()
    result = run_backtest(strat, data, **options)
    seconds = time.perf_counter() - t0
    growth = (_kb("VmHWM") - before) * 1024
    return {"name": name, "events": n_symbols * n_bars, "raw": raw, "growth": growth,
            "seconds": seconds, "equity": result.stats["final_equity"],
            "trades": result.stats["num_trades"] + result.stats["open_trades"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--symbols", type=int, default=1000)
    ap.add_argument("--bars", type=int, default=2520)
    ap.add_argument("--child", choices=("idle", "rotation"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.symbols, args.bars)))
        return
    print(f"universe: {args.symbols:,} symbols x {args.bars:,} daily bars "
          f"({args.symbols * args.bars * ohlc_dtype.itemsize / 1e6:,.0f} MB of bars)")
    for name in ("idle", "rotation"):
        out = subprocess.run([sys.executable, __file__, "--child", name, "--symbols",
                              str(args.symbols), "--bars", str(args.bars)],
                             capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr.strip()}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {name:9s} {r['events'] / r['seconds']:12,.0f} bar-events/s  "
              f"{r['seconds']:6.2f} s  growth {r['growth'] / 1e6:7,.0f} MB "
              f"({r['growth'] / r['raw']:.2f}x the bars)  equity {r['equity']:14,.2f}  "
              f"trades {r['trades']:,}")
    print("  targets: at least 1,000,000 bar-events/s, growth at most 2x the bars")


if __name__ == "__main__":
    main()
