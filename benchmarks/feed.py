"""Feed figures: ticks/s through feed, sampler and scheduler to 1 and 10 strategies, the
tick-to-on_quote latency, and the sampler kernel's throughput.

Run: uv run python benchmarks/feed.py [--seconds 5]
Latency is measured from the moment the provider hands a quote to the feed's channel to the
strategy's on_quote (the flat-out rows carry no timestamps, so they show no latency). Beside
each figure, in brackets, its distance to the floor measured in the same run: an empty trio
checkpoint loop, the time of one trip through trio's scheduler (benchmarks/floors.py).
Targets (issue 20), quiet 2-core machine: one strategy at 10k ticks/s p99 < 100 us; ten
strategies at 100k ticks/s p99 < 300 us; >= 200k quotes/s delivered to one strategy; sampler
>= 20M ticks/s.
"""

from __future__ import annotations

import argparse
import time
import types

import numpy as np
import trio
from floors import gap, trio_floor

from engine import Strategy, run_live
from engine.dtypes import TRADE, ohlc_dtype, tick_dtype
from engine.provider import Provider, load_provider
from engine.sampler import Sampler
from engine.shm import ShmArray


class _Stamping(trio.abc.SendChannel):
    """Wraps the feed's channel to stamp each message with the moment the provider sent it."""

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


def stamped_sim(**options) -> Provider:
    sim = load_provider("providers.sim")
    sim.configure(**options)

    async def stream_quotes(send_chan, symbols, shm, feed_is_live, loglevel=None,
                            task_status=trio.TASK_STATUS_IGNORED):
        await sim.stream_quotes(_Stamping(send_chan), symbols, shm, feed_is_live, loglevel,
                                task_status=task_status)

    mod = types.ModuleType("sim_stamped")
    mod.ohlc_dtype = sim.ohlc_dtype
    mod.stream_quotes = stream_quotes
    mod.backfill_bars = sim.backfill_bars
    return Provider(name="providers.sim", module=mod)


class Counter(Strategy):
    def on_start(self):
        self.n = 0
        self.lat: list[int] = []

    def on_quote(self, quote):
        self.n += 1
        sent = quote.get("_sent_ns")
        if sent is not None and len(self.lat) < 2_000_000:
            self.lat.append(time.perf_counter_ns() - sent)


def through(rate: float, strategies: int, seconds: float, symbols: int = 1,
            stamp: bool = True) -> dict:
    strats = [Counter() for _ in range(strategies)]
    syms = ["btcusd", "ethusd", "solusd", "eurusd"][:symbols]
    if stamp:
        provider = stamped_sim(tick_rate=rate, seed=1)
    else:
        provider = load_provider("providers.sim")
        provider.configure(tick_rate=rate, seed=1)
    result = trio.run(lambda: run_live(strats, provider=provider,
                                       symbols=syms, duration=seconds, history=0,
                                       mailbox=1 << 16))
    lat = np.array(strats[0].lat[len(strats[0].lat) // 10:] or [np.nan], dtype=np.float64) / 1e3
    return {
        "ticks_s": result.ticks / result.seconds,
        "quotes_s": min(s.n for s in strats) / result.seconds,
        "coalesced": sum(s.coalesced for s in result.strategies),
        "p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99),
        "p999": np.percentile(lat, 99.9),
    }


def sampler_rate(n: int = 10_000_000) -> float:
    rng = np.random.default_rng(0)
    ticks = np.zeros(n, dtype=tick_dtype)
    ticks["time"] = 1.7e9 + np.cumsum(rng.exponential(1e-4, n))
    ticks["price"] = 100 + np.cumsum(rng.normal(0, 0.01, n))
    ticks["size"] = rng.exponential(1.0, n)
    ticks["sym"] = rng.integers(0, 4, n)
    ticks["type"] = TRADE
    bars = [ShmArray.create(ohlc_dtype, 100_000, start=0) for _ in range(4)]
    try:
        Sampler(1, bars).fold(ticks[:1000])  # compile / load the cached kernel
        s = Sampler(1, [ShmArray.create(ohlc_dtype, 100_000, start=0) for _ in range(4)])
        t0 = time.perf_counter()
        s.fold(ticks)
        dt = time.perf_counter() - t0
        for b in s.bars:
            b.close()
            b.unlink()
    finally:
        for b in bars:
            b.close()
            b.unlink()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    floor = trio_floor()
    print("feed -> sampler -> scheduler -> strategy, sim provider, one process")
    print(f"floor, an empty trio checkpoint loop: p50 {floor['p50']:.1f} us, p99 "
          f"{floor['p99']:.1f} us, p99.9 {floor['p999']:.1f} us; (+N): the gap to it")
    print(f"{'load':34s} {'ticks/s in':>11s} {'quotes/s to each':>17s} {'coalesced':>9s} "
          f"{'p50 us':>13s} {'p99 us':>13s} {'p99.9 us':>13s}")
    for label, rate, n, stamp in (
        ("10k ticks/s, 1 strategy", 10_000, 1, True),
        ("100k ticks/s, 1 strategy", 100_000, 1, True),
        ("100k ticks/s, 10 strategies", 100_000, 10, True),
        ("flat out (2M ticks/s), 1 strategy", 2_000_000, 1, False),
        ("flat out (2M ticks/s), 10 strategies", 2_000_000, 10, False),
    ):
        r = through(rate, n, args.seconds, stamp=stamp)
        figures = " ".join(f"{gap(r[k], floor[k], 6):>13s}" for k in ("p50", "p99", "p999"))
        print(f"{label:34s} {r['ticks_s']:11.0f} {r['quotes_s']:17.0f} {r['coalesced']:9d} "
              f"{figures}", flush=True)
    rate = sampler_rate()
    print(f"sampler kernel on 10M ticks: {rate / 1e6:.0f}M ticks/s (target >= 20M)")


if __name__ == "__main__":
    main()
