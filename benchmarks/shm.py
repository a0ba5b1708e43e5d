"""ShmArray figures: push throughput (rows/s) for 1-row and 1,000-row pushes, and attach cost.

Run: uv run python benchmarks/shm.py
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from engine.shm import ShmArray, ohlc_dtype, tick_dtype


def push_rate(dtype: np.dtype, batch: int, total: int) -> float:
    rows = np.zeros(batch, dtype=dtype)
    with ShmArray.create(dtype, total + batch, start=0) as shm:
        n = total // batch
        t0 = time.perf_counter()
        for _ in range(n):
            shm.push(rows)
        dt = time.perf_counter() - t0
    return n * batch / dt


def attach_cost(repeats: int = 2000) -> tuple[float, float]:
    with ShmArray.create(ohlc_dtype, 1_000_000) as shm:
        token = shm.token
        t0 = time.perf_counter()
        for _ in range(repeats):
            r = ShmArray.attach(token)
            r.array  # noqa: B018 - the first slice is part of what a reader pays
            r.close()
        in_process = (time.perf_counter() - t0) / repeats
        # A fresh process: import engine.shm and attach, minus the bare interpreter start.
        code = "import sys, json; from engine.shm import ShmArray; ShmArray.attach(json.loads(sys.argv[1]))"
        bare = _time_cmd([sys.executable, "-c", "import numpy, pydantic"])
        full = _time_cmd([sys.executable, "-c", code, token.model_dump_json()])
    return in_process, full - bare


def _time_cmd(cmd: list[str], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    print("ShmArray push throughput")
    for dtype, name in ((ohlc_dtype, "ohlc row (72 B)"), (tick_dtype, "tick row (40 B)")):
        one = push_rate(dtype, 1, 200_000)
        thousand = push_rate(dtype, 1000, 20_000_000)
        print(f"  {name:16s}  1-row pushes: {one / 1e3:9.0f}k rows/s   "
              f"1,000-row pushes: {thousand / 1e6:7.1f}M rows/s")
    in_proc, cross = attach_cost()
    print(f"attach by token: {in_proc * 1e6:.1f} us in-process; "
          f"{cross * 1e3:.1f} ms for a fresh process's import + attach beyond numpy/pydantic")


if __name__ == "__main__":
    main()
