"""Start-up of `engine backtest strategies/sma_cross.py --data GOOG.csv` with warm caches, the
way hyperfine measures a command: a warm-up run, then several runs, median and best wall time
(and CPU time, steadier on a shared machine), beside the floors no engine code can go below:
the interpreter alone, and importing numpy and numba and making the first call of a cached
jitted function (numba sets up its compiler the first time any cached function loads).

Byte-code caching is left on (PYTHONDONTWRITEBYTECODE unset): without it every run compiles
every module again, seconds that no user with a normal Python pays.

The command is timed twice: started alone, and with `engine daemon` up (a warm engine process
the command forks from; started here in a private temporary directory and stopped at the end).

Run: uv run python benchmarks/startup.py [--runs 9] [--data ../shared/data/GOOG.csv]
       [--against /path/to/other/checkout]   (the same command there, ratios in one run)
Target (issue 18): at most 0.5 s of wall time (1.05 s before).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NUMBA_FLOOR = """
import numpy as np
from numba import njit
from engine.kernels import _moving
_moving.sma_update(_moving.sma_state(3), np.arange(10.0), np.empty(10))
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("ENGINE_NO_DAEMON", None)
    env.update(extra)
    return env


def measure(cmd: list[str], runs: int, cwd: Path, env: dict[str, str] | None = None
            ) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system of the child) seconds of each run, after one warm-up."""
    walls, cpus = [], []
    for k in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=cwd, env=env or _env(ENGINE_NO_DAEMON="1"),
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
        if k:
            walls.append(wall)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def row(label: str, walls: list[float], cpus: list[float]) -> float:
    med = statistics.median(walls)
    print(f"  {label:44s} median {med:6.3f} s  best {min(walls):6.3f} s  "
          f"cpu median {statistics.median(cpus):6.3f} s")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--data", default=str(Path(os.environ.get(
        "ENGINE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "GOOG.csv"))
    ap.add_argument("--against", help="another checkout (its .venv) to run the same command in")
    args = ap.parse_args()
    python = sys.executable
    command = ["-m", "engine.cli", "backtest", str(ROOT / "strategies" / "sma_cross.py"),
               "--data", args.data]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"start-up, {args.runs} runs after a warm-up, load average {load:.2f} on "
          f"{os.cpu_count()} cores")
    floor = row("python -c pass", *measure([python, "-c", "pass"], args.runs, ROOT))
    jit = row("numpy + numba + first cached kernel call",
              *measure([python, "-c", NUMBA_FLOOR], args.runs, ROOT))
    ours = row("engine backtest sma_cross.py --data GOOG.csv",
               *measure([python, *command], args.runs, ROOT))
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as runtime:
        warm_env = _env(ENGINE_RUNTIME_DIR=runtime)
        subprocess.run([python, "-m", "engine.cli", "daemon", "start"], cwd=ROOT, env=warm_env,
                       check=True, capture_output=True)
        try:
            warm = row("the same with engine daemon up",
                       *measure([python, *command], args.runs, ROOT, warm_env))
        finally:
            subprocess.run([python, "-m", "engine.cli", "daemon", "stop"], cwd=ROOT,
                           env=warm_env, capture_output=True)
    if args.against:
        other = Path(args.against)
        theirs = row(f"the same in {other}", *measure(
            [str(other / ".venv" / "bin" / "python"), *command], args.runs, other))
        print(f"  this checkout / {other.name}: {ours / theirs:.2f}x wall time")
    print(f"  above the interpreter: {ours - floor:.3f} s, of which numba's floor "
          f"{jit - floor:.3f} s; the engine's own {ours - jit:.3f} s")
    print(f"  with the daemon: {warm:.3f} s, {ours / warm:.1f}x faster than alone")
    print(f"  target <= 0.5 s: {'met' if warm <= 0.5 else 'missed'} with the daemon "
          f"({warm:.3f} s); {'met' if ours <= 0.5 else 'missed'} alone ({ours:.3f} s, "
          f"numba's floor {jit:.3f} s)")


if __name__ == "__main__":
    main()
