"""kill -9 of the root of `engine run --actors` at several moments of start-up and after: no
child actor process outlives it.

Every process of a run carries a marker in its environment (children inherit it), so a child
is found even once its dead parent's children have been handed to init. Moments are events
seen from outside (a child process appears, every child exists, the root logs that the
strategy runs), never delays.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.actors.procs import alive, cmdline, free_port

ROOT = Path(__file__).resolve().parents[2]

STRATEGY = """
from engine import Strategy


class Idle(Strategy):
    symbols = ("btcusd",)

    def on_quote(self, quote):
        pass
"""

# Bounds, not delays: how long a loaded two-core machine may take to start an actor tree, and
# for the orphans to go once the root is dead (the boot's grace is 3 s; a child still importing
# tractor dies at once).
START = 120.0
VANISH = 30.0


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries `mark`."""
    needle = f"ENGINE_CHAOS_MARK={mark}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and alive(int(entry.name)):
            out.append(int(entry.name))
    return out


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


class Run:
    """`engine run --actors` with a paper account, in its own session, marked."""

    def __init__(self, tmp_path: Path) -> None:
        self.mark = uuid.uuid4().hex
        path = tmp_path / "idle.py"
        path.write_text(STRATEGY)
        env = dict(os.environ, PYTHONUNBUFFERED="1", ENGINE_HOME=str(tmp_path / "home"),
                   ENGINE_CHAOS_MARK=self.mark)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--actors", str(path), "--paper",
             "--history", "0", "-o", "seed=7", "--registry", f"127.0.0.1:{free_port()}",
             "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
            start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.text = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def children(self) -> list[int]:
        return [p for p in marked(self.mark) if p != self.proc.pid]

    def actors(self) -> list[int]:
        return [p for p in self.children() if "engine.actors._boot" in cmdline(p)]

    def expect(self, text: str) -> None:
        deadline = time.monotonic() + START
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} within {START:g} s:\n{self.text}")
            self.text += line
            if line == "":
                pytest.fail(f"the run ended before {text!r}:\n{self.text}")
            if text in line:
                return

    def close(self) -> None:
        # Whatever the test found, leave nothing behind: the marked processes are all ours.
        for pid in marked(self.mark):
            os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def _first_child(run: Run) -> None:
    wait_until(lambda: run.actors(), START, "a child actor process")


def _every_child(run: Run) -> None:
    # The feed daemon, the clearing actor and the strategy actor.
    wait_until(lambda: len(run.actors()) >= 3, START, "three child actor processes")


def _running(run: Run) -> None:
    run.expect("strategy Idle running in actor pid")


@pytest.mark.parametrize("moment", [_first_child, _every_child, _running],
                         ids=["first-child-spawned", "every-child-spawned", "strategy-running"])
def test_kill_9_of_the_root_leaves_no_child_behind(tmp_path, moment):
    run = Run(tmp_path)
    try:
        moment(run)
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=10)
        wait_until(lambda: not run.children(), VANISH, "every child of the killed root gone")
    finally:
        run.close()


def test_kill_9_of_the_process_group_leaves_no_process_behind(tmp_path):
    run = Run(tmp_path)
    try:
        _running(run)
        assert run.children()
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=10)
        wait_until(lambda: not run.children(), VANISH, "every process of the killed group gone")
    finally:
        run.close()
