"""Actor figures: tick-to-on_quote latency in one process vs across actors, and sweep
throughput with 1 vs N worker actors.

Run: uv run python benchmarks/actors.py [--seconds 10] [--rate 10000] [--combos 48]

Latency is measured from the moment the provider hands a quote to the feed's channel (stamped
with time.perf_counter_ns, CLOCK_MONOTONIC: one clock for every process of the machine) to the
strategy's on_quote: in one process through feed, sampler and scheduler; across actors also
through the feed daemon's ring and doorbell to the strategy actor (the default lanes,
`engine.actors.ring`) or on the tractor stream itself (`run_actors(lanes=False)`,
`engine run --actors --no-lanes`), with the feed daemon on a CPU of its own and the strategy
actor on the others (the default, `engine.actors.cpus`) or placed by the OS (`--no-pin`). Beside
each figure, in brackets, its distance to the floor
of its path measured in the same run (benchmarks/floors.py): an empty trio checkpoint loop in
one process, an eventfd ping-pong between two processes (one way) across actors.
Sweep throughput is combinations per second from the first result to the last (the pool's
start-up is shown apart), with the test evaluation function (an SMA cross in numpy on 2 x 20k
bars) plus `--spin` seconds of work per combination.
Targets (issue 20), quiet 2-core machine: p99 < 100 us in one process and < 300 us across
actors at 10k ticks/s; (the actors issue) >= 1.8x with 2 workers.

This file is also the stamping provider the feed daemon loads by path (`stream_quotes` below).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import trio

from engine.provider import load_provider

ROOT = Path(__file__).resolve().parents[1]

# -- the stamping provider: providers.sim with each quote stamped as it is sent ---------------

_sim = load_provider("providers.sim")
ohlc_dtype = _sim.ohlc_dtype
backfill_bars = _sim.backfill_bars


def configure(**options):
    return _sim.module.configure(**options)


class _Stamping(trio.abc.SendChannel):
    def __init__(self, inner):
        self._inner = inner

    def send_nowait(self, msg):
        msg["_sent_ns"] = time.perf_counter_ns()
        self._inner.send_nowait(msg)

    async def send(self, msg):
        msg["_sent_ns"] = time.perf_counter_ns()
        await self._inner.send(msg)

    async def aclose(self):
        await self._inner.aclose()

    def clone(self):
        return _Stamping(self._inner.clone())


async def stream_quotes(send_chan, symbols, shm, feed_is_live, loglevel=None,
                        task_status=trio.TASK_STATUS_IGNORED):
    await _sim.stream_quotes(_Stamping(send_chan), symbols, shm, feed_is_live, loglevel,
                             task_status=task_status)


# -- latency ---------------------------------------------------------------------------------

PROBE = '''
import json
import time

from engine import Strategy


class LatencyProbe(Strategy):
    symbols = ("btcusd",)
    out: str = ""

    def on_start(self):
        self.lat = []

    def on_quote(self, quote):
        sent = quote.get("_sent_ns")
        if sent is not None and len(self.lat) < 5_000_000:
            self.lat.append(time.perf_counter_ns() - sent)

    def on_stop(self):
        with open(self.out, "w") as f:
            json.dump(self.lat, f)
'''


def _percentiles(lat_ns: list[int]) -> dict[str, float]:
    # The first tenth is warm-up (imports, JIT, connection set-up).
    lat = np.array(lat_ns[len(lat_ns) // 10:] or [np.nan], dtype=np.float64) / 1e3
    return {"n": len(lat), "p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99),
            "p999": np.percentile(lat, 99.9)}


def latency_in_process(rate: float, seconds: float, probe: Path, out: Path) -> dict:
    from engine.live import run_live
    from engine.provider import Provider
    from engine.strategy import load_strategy

    configure(tick_rate=rate, seed=1)
    provider = Provider(name="benchmarks/actors.py", module=sys.modules[__name__])
    strategy = load_strategy(probe)(out=str(out))
    result = trio.run(lambda: run_live([strategy], provider=provider, symbols=["btcusd"],
                                       duration=seconds, history=0, mailbox=1 << 16))
    stats = _percentiles(json.loads(out.read_text()))
    return stats | {"quotes_s": result.quotes / result.seconds,
                    "coalesced": result.strategies[0].coalesced}


def latency_across_actors(rate: float, seconds: float, probe: Path, out: Path,
                          lanes: bool = True, pin_cpus: bool = True) -> dict:
    from engine.actors.root import run

    result = run([str(probe)], provider=str(Path(__file__).resolve()),
                 provider_options={"tick_rate": rate, "seed": 1}, symbols=["btcusd"],
                 duration=seconds, history=0, params={"out": str(out)}, mailbox=1 << 16,
                 registry=("127.0.0.1", _free_port()), log_level="warning", lanes=lanes,
                 pin_cpus=pin_cpus)
    stats = _percentiles(json.loads(out.read_text()))
    return stats | {"quotes_s": result.quotes / max(result.seconds, 1e-9),
                    "coalesced": result.strategies[0].coalesced}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- sweep throughput ------------------------------------------------------------------------


def sweep_rate(workers: int, combos: int, spin: float, evaluate: str) -> dict:
    from engine.actors.sweep import open_history, parse_grid, run_sweep

    sys.path.insert(0, str(ROOT))
    from tests.actors import sweep_eval

    slows = max(2, combos // 8)
    grid = parse_grid([f"fast=2:{2 + 7 * 2}:2", f"slow=40:{40 + (slows - 1) * 5}:5"])[:combos]
    stamps: list[float] = []
    with open_history(sweep_eval.history(rows=20_000)) as shms:
        t0 = time.perf_counter()
        rows = trio.run(lambda: run_sweep(
            str(ROOT / "strategies" / "sma_cross.py"), grid, shms, workers=workers,
            evaluate=evaluate, options={"spin": spin} if spin else {},
            progress=lambda done, total, row: stamps.append(time.perf_counter())))
        wall = time.perf_counter() - t0
    failed = [r["error"] for r in rows if r["error"]]
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"combos": len(rows), "failed": len(failed), "first_error": failed[:1],
            "wall": wall, "steady": steady,
            "startup": stamps[0] - t0 if stamps else float("nan"),
            "workers": len({r["worker"] for r in rows})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per latency run")
    ap.add_argument("--rate", type=float, default=10_000, help="sim ticks/s")
    ap.add_argument("--combos", type=int, default=48, help="combinations per sweep")
    ap.add_argument("--spin", type=float, default=0.05,
                    help="extra seconds of work per combination (default 0.05)")
    ap.add_argument("--workers", type=int, default=None, help="N (default: one per core)")
    ap.add_argument("--evaluate", default=f"{ROOT / 'tests' / 'actors' / 'sweep_eval.py'}:evaluate",
                    help="evaluation function (default: the test SMA-cross function)")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()
    if not args.skip_latency:
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "latency_probe.py"
            probe.write_text(textwrap.dedent(PROBE))
            from floors import eventfd_floor, gap, trio_floor

            in_one, across = trio_floor(), eventfd_floor()
            print(f"tick -> on_quote latency, sim at {args.rate:g} ticks/s, {args.seconds:g} s "
                  f"per run (first tenth dropped)")
            for what, f in (("an empty trio checkpoint loop", in_one),
                            ("an eventfd ping-pong between two processes, one way", across)):
                print(f"floor, {what}: p50 {f['p50']:.1f} us, p99 {f['p99']:.1f} us, p99.9 "
                      f"{f['p999']:.1f} us")
            print(f"{'path':31s} {'quotes/s':>9s} {'samples':>8s} {'coalesced':>9s} "
                  f"{'p50 us (+floor gap)':>20s} {'p99 us':>13s} {'p99.9 us':>13s}")
            for label, fn, floor in (
                    ("in process", latency_in_process, in_one),
                    ("actors (default: lane, pinned)", latency_across_actors, across),
                    ("actors, lane, --no-pin",
                     lambda *a: latency_across_actors(*a, pin_cpus=False), across),
                    ("actors, --no-lanes", lambda *a: latency_across_actors(*a, lanes=False),
                     across)):
                r = fn(args.rate, args.seconds, probe, Path(tmp) / "lat.json")
                print(f"{label:31s} {r['quotes_s']:9.0f} {r['n']:8d} {r['coalesced']:9d} "
                      f"{gap(r['p50'], floor['p50']):>20s} {gap(r['p99'], floor['p99']):>13s} "
                      f"{gap(r['p999'], floor['p999']):>13s}", flush=True)
    if not args.skip_sweep:
        from engine.actors.sweep import default_workers

        n = args.workers or default_workers()
        print(f"\nsweep throughput, {args.combos} combinations, {args.spin * 1e3:g} ms of extra "
              f"work each, evaluate={Path(args.evaluate.split(':')[0]).name}")
        print(f"{'workers':>7s} {'combos/s':>9s} {'speed-up':>8s} {'start-up s':>10s} "
              f"{'wall s':>7s} {'used':>5s}")
        base = None
        for workers in sorted({1, n}):
            r = sweep_rate(workers, args.combos, args.spin, args.evaluate)
            base = base or r["steady"]
            print(f"{workers:7d} {r['steady']:9.1f} {r['steady'] / base:7.2f}x "
                  f"{r['startup']:10.2f} {r['wall']:7.2f} {r['workers']:5d}", flush=True)
            if r["failed"]:
                print(f"        ({r['failed']} combinations failed; first: {r['first_error'][0]})")
    print(f"\n(machine: {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
