"""Start-up removal of dead engines' segments: the dead go, the living stay, a reused pid is seen."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from engine import _shm_reap


def _touch(directory: Path, pid: int, when: float | None = None) -> str:
    name = f"engine_{pid}_{os.urandom(6).hex()}"
    path = directory / name
    path.write_bytes(b"\0" * 64)
    if when is not None:
        os.utime(path, (when, when))
    return name


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it (unless reused within this test: see below)


def test_segments_of_dead_processes_go_and_those_of_live_ones_stay(tmp_path):
    dead = _dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = _touch(tmp_path, dead)
        mine = _touch(tmp_path, os.getpid())
        living = _touch(tmp_path, sleeper.pid)
        other = tmp_path / "engine_notapid_x"
        other.write_bytes(b"")
        unrelated = tmp_path / "psm_123"
        unrelated.write_bytes(b"")
        removed = _shm_reap.reap(tmp_path)
        assert removed == [gone]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [mine, living, other.name, unrelated.name])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_zombie_is_dead_and_a_pid_reused_after_the_segment_was_made_is_not_its_creator(
        tmp_path):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 60
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        of_zombie = _touch(tmp_path, zombie.pid)
        # A segment made an hour before the live process that now has its pid started: the pid
        # was reused, its creator is gone.
        reused = _touch(tmp_path, sleeper.pid, when=time.time() - 3600)
        # Process 1 started before this segment was made: it is its creator, alive.
        of_init = _touch(tmp_path, 1)
        assert sorted(_shm_reap.reap(tmp_path)) == sorted([of_zombie, reused])
        assert [p.name for p in tmp_path.iterdir()] == [of_init]
    finally:
        sleeper.kill()
        sleeper.wait()
        zombie.wait()
