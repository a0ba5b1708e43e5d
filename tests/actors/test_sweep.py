"""Parameter sweeps over tractor worker actors: the grid, a local pool reading one copy of the
history in shared memory, and a second "host" joining through its own registry on another
loopback address."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from engine.actors.sweep import (
    format_table,
    open_history,
    parse_grid,
    rank,
    run_sweep,
    write_csv,
    write_json,
)
from tests.actors import sweep_eval
from tests.actors.procs import free_port, parent

ROOT = Path(__file__).resolve().parents[2]
EVALUATE = f"{sweep_eval.__file__}:evaluate"
STRATEGY = str(ROOT / "strategies" / "sma_cross.py")


def test_the_grid_includes_its_stop_and_takes_lists_and_constants():
    grid = parse_grid(["fast=5:50:5", "slow=20,30", "size=1.5"])
    assert len(grid) == 10 * 2
    assert grid[0] == {"fast": 5, "slow": 20, "size": 1.5}
    assert grid[-1] == {"fast": 50, "slow": 30, "size": 1.5}
    assert [g["x"] for g in parse_grid(["x=0.1:0.3:0.1"])] == [0.1, 0.2, 0.3]
    assert parse_grid(["short=true,false"]) == [{"short": True}, {"short": False}]
    for bad, why in (("fast=5:1:1", "below start"), ("fast=1:5:0", "positive"),
                     ("fast=1:5", "start:stop:step"), ("fast", "name="),
                     ("a=1:x:1", "numbers")):
        with pytest.raises(ValueError, match=why):
            parse_grid([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_grid(["a=1", "a=2"])


def expected(grid, shms):
    tokens = {s: shm.token.model_dump() for s, shm in shms.items()}
    out = []
    for params in grid:
        try:
            out.append(sweep_eval.evaluate(STRATEGY, params, tokens, {}))
        except ValueError:
            out.append(None)
    return out


async def test_a_local_pool_attaches_the_history_once_and_ranks_every_combination(tmp_path):
    grid = parse_grid(["fast=5:25:10", "slow=10:30:10"])
    seen = []
    with open_history(sweep_eval.history()) as shms:
        want = expected(grid, shms)
        with trio.fail_after(60):
            rows = await run_sweep(STRATEGY, grid, shms, workers=2, evaluate=EVALUATE,
                                   progress=lambda done, total, row: seen.append((done, total)))
    assert [r["params"] for r in rows] == grid
    assert seen == [(i, len(grid)) for i in range(1, len(grid) + 1)]
    for row, metrics in zip(rows, want, strict=True):
        if metrics is None:
            assert "ValueError: need 0 < fast < slow" in row["error"]
            continue
        assert row["error"] is None
        assert row["metrics"] == metrics | {"in_place": 1.0}
        assert row["metrics"]["strategy_seen"] == 1.0
        assert int(row["worker"].rsplit(":", 1)[1]) != os.getpid()
    best = rank(rows, "sharpe")
    assert [r["metrics"]["sharpe"] for r in best] == sorted(
        (r["metrics"]["sharpe"] for r in rows if r["metrics"]), reverse=True)
    table = format_table(rows, "sharpe").splitlines()
    assert table[0].split()[:4] == ["rank", "fast", "slow", "sharpe"]
    assert table[1].split()[:3] == ["1", str(best[0]["params"]["fast"]),
                                    str(best[0]["params"]["slow"])]
    assert "3 of 9 combinations failed" in table[-1]
    check_files(rows, grid, tmp_path)


def check_files(rows, grid, tmp_path):
    write_json(rows, tmp_path / "sweep.json")
    write_csv(rows, tmp_path / "sweep.csv")
    assert json.loads((tmp_path / "sweep.json").read_text())[0]["params"] == grid[0]
    with open(tmp_path / "sweep.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(grid)
    assert float(lines[-1]["sharpe"]) == rows[-1]["metrics"]["sharpe"]
    assert lines[3]["error"].startswith("ValueError")  # fast=15, slow=10


SECRET = b"0123456789abcdef-two-host-test-secret"


def secret_file(tmp_path: Path, secret: bytes = SECRET, mode: int = 0o600) -> Path:
    path = tmp_path / "sweep.secret"
    path.write_bytes(secret + b"\n")
    path.chmod(mode)
    return path


def start_host(registry: str, host_registry: str, secret: Path, *extra: str,
               script: str | None = None, env: dict | None = None) -> subprocess.Popen:
    """`python -m engine.actors.sweep_host` in its own session, as on another machine (or
    `script`, a variant of it, run the same way)."""
    head = [sys.executable, script] if script else [sys.executable, "-m",
                                                   "engine.actors.sweep_host"]
    return subprocess.Popen(
        [*head, "--registry", registry, "--bind", host_registry, "--workers", "2",
         "--secret-file", str(secret), *extra],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env=env)


async def test_a_second_host_joins_through_the_registry_and_takes_the_jobs(tmp_path):
    registry = f"127.0.0.1:{free_port()}"
    host_registry = f"127.0.0.2:{free_port('127.0.0.2')}"
    grid = parse_grid(["fast=4:12:4", "slow=20:40:20"])
    agent = start_host(registry, host_registry, secret_file(tmp_path))
    try:
        with open_history(sweep_eval.history(rows=3000)) as shms:
            want = expected(grid, shms)
            with trio.fail_after(80):
                # No local workers: every job must run on the other "host".
                rows = await run_sweep(STRATEGY, grid, shms, workers=0, evaluate=EVALUATE,
                                       registry=registry, hosts=1, host_timeout=60,
                                       secret=SECRET)
        assert [r["params"] for r in rows] == grid
        assert [r["metrics"] for r in rows] == [w | {"in_place": 1.0} for w in want]
        pids = {int(r["worker"].rsplit(":", 1)[1]) for r in rows}
        assert {parent(p) for p in pids} == {agent.pid}, "jobs ran in the host's own workers"
    finally:
        os.killpg(agent.pid, signal.SIGINT)
        _, err = agent.communicate(timeout=20)
    assert agent.returncode == 0, err
    assert "Traceback" not in err, err
    assert f"joined the registry at {registry}" in err


async def test_a_worker_killed_mid_sweep_gives_its_job_back(caplog):
    grid = parse_grid(["fast=2:10:2", "slow=40,50"])
    killed = []

    def progress(done, total, row):
        if not killed:  # kill the worker that just answered: it is on its next job by now
            killed.append(int(row["worker"].rsplit(":", 1)[1]))
            os.kill(killed[0], signal.SIGKILL)

    with open_history(sweep_eval.history(rows=2000)) as shms:
        want = expected(grid, shms)
        with trio.fail_after(60):
            rows = await run_sweep(STRATEGY, grid, shms, workers=2, evaluate=EVALUATE,
                                   options={"spin": 0.2}, progress=progress)
    assert [r["metrics"] for r in rows] == [w | {"in_place": 1.0} for w in want]
    assert all(r["error"] is None for r in rows)
    assert "replacing it" in caplog.text  # the slot started a new worker
