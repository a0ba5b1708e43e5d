"""kill -9 of a run's whole process group at seeded random moments: the next engine to start
removes every segment the dead group left, and no process of the group outlives the kill.

Killing the group takes multiprocessing's resource tracker with it, so nothing but the engine's
own start-up removal (`engine._shm_reap`) can clean up. Each round's run is the next start for
the round before; a last, normal run is the next start for the last round.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.actors.procs import alive, tree
from tests.conftest import creator, segments_of, shm_names

ROOT = Path(__file__).resolve().parents[2]
SMA = str(ROOT / "strategies" / "sma_cross.py")
SEED = 1404
# Real seconds a test waits for a condition before failing; the machine may be loaded.
PATIENCE = 120.0


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _live_pids() -> dict[int, list[str]]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] not in ("Z", "X"):
                out[int(entry.name)] = stat
    return out


def _group(pgid: int) -> set[int]:
    """Live processes of process group `pgid` (field 5 of /proc/<pid>/stat)."""
    return {pid for pid, stat in _live_pids().items() if int(stat[2]) == pgid}


def _live_below(pid: int) -> set[int]:
    return {p for p in tree(pid) if alive(p)}


def _wait_for(what: str, cond, seed_note: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} ({seed_note})")
        time.sleep(0.05)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # A session of its own: the run's process group is its pid, as a shell job's would be.
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "engine.cli", "run", *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                cwd=ROOT, start_new_session=True)


def _kill_rounds(args: list[str], rounds: int, seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    note = f"seed {seed}"
    killed: list[int] = []  # pids of every process of every killed group
    held: list[str] = []  # segments the killed runs held at the kill
    for i in range(rounds):
        # Half the rounds die at a random moment of start-up (imports, history, first segments),
        # the others a random moment after their segments exist; the first round always after.
        after_segments = i == 0 or rng.random() < 0.5
        delay = rng.uniform(0.0, 1.5 if after_segments else 4.0)
        proc = _start(args, tmp_path / "stderr.log")
        if after_segments:
            # With --actors the segments are the feed daemon's, a child of the run.
            _wait_for("the run never created its segments",
                      lambda p=proc: segments_of(p.pid, *_live_below(p.pid))
                      or p.poll() is not None, note)
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()[-2000:]
        time.sleep(delay)
        members = _group(proc.pid) | _live_below(proc.pid) | {proc.pid}
        held += sorted(segments_of(*members))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=PATIENCE)
        killed += members
        _wait_for(f"round {i}: processes of the killed group live on: {sorted(_group(proc.pid))}",
                  lambda p=proc: not _group(p.pid), note)
        survivors = [p for p in members if p in _live_pids()]
        assert not survivors, f"round {i}: {survivors} outlived the kill ({note})"
    assert held, "no round was killed while it held segments"
    # The next start: a short single-process run (any engine start will do: the removal runs
    # when a process creates its first segment), which must remove what the killed ones left.
    out = subprocess.run([sys.executable, "-m", "engine.cli", "run", SMA, "-p", "fast=2", "-p",
                          "slow=4", "--duration", "1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    left = segments_of(*killed)
    assert not left, f"segments of killed runs outlived the next start: {sorted(left)} ({note})"
    assert not {n for n in held if n in shm_names()}
    assert all(creator(n) in killed for n in held)


def test_kill_9_of_an_engine_runs_process_group_leaves_nothing_after_the_next_start(tmp_path):
    _kill_rounds([SMA, "-p", "fast=2", "-p", "slow=4", "--duration", "120"], rounds=3,
                 seed=SEED, tmp_path=tmp_path)


def test_kill_9_of_an_actors_runs_process_group_leaves_nothing_after_the_next_start(tmp_path):
    _kill_rounds([SMA, "--actors", "-p", "fast=2", "-p", "slow=4", "--duration", "120"],
                 rounds=2, seed=SEED + 1, tmp_path=tmp_path)
