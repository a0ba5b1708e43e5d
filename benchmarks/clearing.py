"""Clearing figures: fills/s in the in-memory matching core (what backtests use) and through
the paper broker's whole path, submit -> match -> fill -> ledger (one fsync per batch).

Run: uv run python benchmarks/clearing.py
Targets (issue 5): >= 500k fills/s in the core, >= 50k fills/s with the ledger on.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from numba import njit

from engine.clearing import _core
from engine.clearing.broker import open_account
from engine.clock import ReplayClock
from engine.orders import SubmitOrder


@njit(cache=True)
def _core_loop(n, orders, events, account, positions, marks, cfg):
    """Each step places a market order (alternating sides) and matches it against a quote."""
    fills = 0
    bounds = np.zeros(2, dtype=np.int64)
    for k in range(n):
        side = 1 if k % 2 == 0 else -1
        _core.place_order(orders, k, 0, side, _core.MARKET, _core.GTC, 1.0, np.nan, np.nan,
                          float(k), 0.0, np.inf, False)
        mid = 100.0 + (k % 7) * 0.01
        bounds[1] = k + 1
        m = _core.match_quote(orders, bounds, 0, float(k), mid - 0.01, mid + 0.01, 50.0, 50.0,
                              mid, cfg, 0.01, account, positions, marks, events)
        for j in range(m):
            if events[j]["kind"] == _core.EV_FILL:
                fills += 1
    return fills


def core_rate(n: int = 2_000_000) -> float:
    cfg = np.zeros(_core.N_CONFIG)
    cfg[_core.C_FEE_TAKER_PCT] = 0.0002
    cfg[_core.C_PARTIAL] = 1.0

    def arrays():
        return (np.zeros(n, dtype=_core.order_dtype), np.zeros(64, dtype=_core.event_dtype),
                np.array([1e6, 0.0, 0.0]), np.zeros((1, 4)), np.full(1, np.nan))

    _core_loop(100, *arrays()[:2], *arrays()[2:], cfg)  # load the cached compile
    orders, events, account, positions, marks = arrays()
    t0 = time.perf_counter()
    fills = _core_loop(n, orders, events, account, positions, marks, cfg)
    return fills / (time.perf_counter() - t0)


def broker_rate(batches: int = 200, per_batch: int = 500, latency_ms: float = 0.0
                ) -> tuple[float, float]:
    """Fills/s through PaperBroker with a ledger on disk, and the same without the ledger.

    With no latency each order is matched the moment it is submitted; with latency, the next
    quote matches every order that has reached the book.
    """
    from engine.clearing.config import BrokerConfig

    rates = []
    for durable in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            clock = ReplayClock(1.7e9)
            broker = open_account("bench", ["x"], cash=1e12, clock=clock, durable=durable,
                                  path=Path(tmp) / "bench",
                                  config=BrokerConfig(latency_ms=latency_ms))
            quote = {"symbol": "x", "bid": 99.99, "ask": 100.01, "last": 100.0, "ticks": []}
            broker.on_batch([quote], [], [])
            # Warm up: load the cached kernels outside the timed loop.
            broker.submit(SubmitOrder(symbol="x", side="buy", size=1.0))
            broker.submit(SubmitOrder(symbol="x", side="sell", size=1.0))
            clock.advance(1.7e9 + 0.5)
            broker.on_batch([quote], [], [])
            broker.fills.clear()
            broker.group_commit = True  # as under run(): one ledger append per batch
            t0 = time.perf_counter()
            for b in range(batches):
                clock.advance(1.7e9 + b)
                side = "buy" if b % 2 == 0 else "sell"
                for _ in range(per_batch):
                    # Matched at once against the current quote (no latency), as live.
                    broker.submit(SubmitOrder(symbol="x", side=side, size=1.0))
                if latency_ms:
                    clock.advance(1.7e9 + b + latency_ms / 1e3)
                    broker.on_batch([quote], [], [])
                broker.flush()
            dt = time.perf_counter() - t0
            assert len(broker.fills) == batches * per_batch, len(broker.fills)
            if broker.ledger is not None:
                broker.ledger.close()
            rates.append(len(broker.fills) / dt)
    return rates[0], rates[1]


def main() -> None:
    core = core_rate()
    print(f"in-memory matching core (numba, place + match + fill + account): "
          f"{core / 1e6:.2f}M fills/s (target >= 0.5M)")
    print("paper broker, submit -> risk -> match -> fill -> typed events -> ledger "
          "(one fsync per batch; target >= 50k fills/s with the ledger):")
    for label, latency in (("matched on submit (no latency)", 0.0),
                           ("matched by the next quote (1 ms latency)", 1.0)):
        for per_batch in (500, 2000):
            with_ledger, without = broker_rate(batches=100_000 // per_batch, per_batch=per_batch,
                                               latency_ms=latency)
            print(f"  {label:42s} {per_batch:5d} orders/batch: {with_ledger / 1e3:5.0f}k fills/s"
                  f" with the ledger, {without / 1e3:5.0f}k in memory")


if __name__ == "__main__":
    main()
