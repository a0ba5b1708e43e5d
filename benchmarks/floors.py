"""Floors for the latency benchmarks: what the machine itself costs, measured in the same run.

- `trio_floor`: an empty trio checkpoint loop, the time of one `await checkpoint()` (a trip
  through trio's scheduler, the least any hop between tasks costs in one process).
- `eventfd_floor`: an eventfd ping-pong between two processes, half of each round trip (a
  wake-up across processes, the least a tick handed to another process costs).

`gap` prints a figure with its distance to the floor at the same percentile beside it.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import trio

__all__ = ["trio_floor", "eventfd_floor", "gap", "percentiles"]


def percentiles(lat_us: np.ndarray) -> dict[str, float]:
    lat = lat_us if len(lat_us) else np.array([np.nan])
    return {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "p999": float(np.percentile(lat, 99.9))}


def trio_floor(n: int = 200_000) -> dict[str, float]:
    """Microseconds per `await trio.lowlevel.checkpoint()` in an otherwise empty loop."""
    out = np.empty(n, dtype=np.int64)

    async def loop() -> None:
        now, checkpoint = time.perf_counter_ns, trio.lowlevel.checkpoint
        for i in range(n):
            t = now()
            await checkpoint()
            out[i] = now() - t

    trio.run(loop)
    return percentiles(out[n // 10:] / 1e3)


def eventfd_floor(n: int = 20_000) -> dict[str, float]:
    """Microseconds one way (half a round trip) of an eventfd ping-pong with a child process."""
    ping = os.eventfd(0, os.EFD_CLOEXEC)
    pong = os.eventfd(0, os.EFD_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: answer every ping, then leave without running any cleanup
        try:
            for _ in range(n):
                os.eventfd_read(ping)
                os.eventfd_write(pong, 1)
        finally:
            os._exit(0)
    done = False
    try:
        out = np.empty(n, dtype=np.int64)
        now = time.perf_counter_ns
        for i in range(n):
            t = now()
            os.eventfd_write(ping, 1)
            os.eventfd_read(pong)
            out[i] = now() - t
        done = True
    finally:
        if not done:
            os.kill(pid, signal.SIGKILL)  # it waits for a ping that will not come
        os.waitpid(pid, 0)
        os.close(ping)
        os.close(pong)
    return percentiles(out[n // 10:] / 2e3)


def gap(value: float, floor: float, width: int = 7) -> str:
    """`value` and, beside it, how far above the floor it is."""
    return f"{value:{width}.0f} (+{value - floor:.0f})"
