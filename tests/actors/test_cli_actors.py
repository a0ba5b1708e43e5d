"""`engine run --actors` as a user meets it: two runs share one feed daemon through the
registry, and Ctrl-C (SIGINT to the whole terminal process group) tears each tree down within
two seconds, leaving no process and no shared-memory segment."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.actors.procs import alive, cmdline, descendants, free_port

ROOT = Path(__file__).resolve().parents[2]
SMA = str(ROOT / "strategies" / "sma_cross.py")
MOMENTUM = str(ROOT / "strategies" / "quote_momentum.py")


class Run:
    """An `engine run --actors` in its own session (its own terminal process group)."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "--actors", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
            start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.text = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def expect(self, pattern: str, timeout: float = 60) -> re.Match:
        """Wait for a line matching `pattern`, from now on."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} within {timeout} s:\n{self.text}")
            self.text += line
            if line == "":
                pytest.fail(f"the run ended before {pattern!r}:\n{self.text}")
            found = re.search(pattern, line)
            if found:
                return found

    def interrupt(self) -> float:
        """Ctrl-C as a terminal sends it (to every process of the group); return the seconds
        until the run exited."""
        t0 = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=20)
        took = time.monotonic() - t0
        while (line := self.lines.get(timeout=5)) != "":
            self.text += line
        self.proc.stdout.close()
        return took


def test_a_second_run_shares_the_feed_daemon_and_ctrl_c_leaves_nothing():
    common = ["-p", "fast=2", "-p", "slow=4", "--history", "1", "--status-every", "1",
              "--registry", f"127.0.0.1:{free_port()}"]
    first = Run(SMA, MOMENTUM, *common)
    second = None
    try:
        daemon = first.expect(r"started feed daemon (feed\.sim\.\w+) \(pid (\d+)\)")
        first.expect(r"btcusd bar close")
        first_tree = descendants(first.proc.pid)
        assert int(daemon[2]) in first_tree

        second = Run(SMA, MOMENTUM, *common)
        shared = second.expect(r"sharing the running feed daemon (feed\.sim\.\w+) \(pid (\d+)\)")
        assert shared.groups() == daemon.groups()
        second.expect(r"btcusd bar close")
        second_tree = descendants(second.proc.pid)
        actors = [cmdline(p) for p in second_tree]
        assert not [c for c in actors if "('feed." in c], "the second run started a daemon"
        assert len([c for c in actors if "('strategy." in c]) == 2

        took = second.interrupt()
        assert second.proc.returncode == 0, second.text
        assert took < 2.0, f"the second run took {took:.2f} s to stop"
        assert "(interrupted)" in second.text
        assert "shared: started by another run" in second.text
        assert "SmaCross: ok" in second.text
        assert not [p for p in second_tree if alive(p)]
        first.expect(r"btcusd bar close")  # the first run, and its daemon, carry on

        took = first.interrupt()
        assert first.proc.returncode == 0, first.text
        assert took < 2.0, f"the first run took {took:.2f} s to stop"
        assert "QuoteMomentum: ok" in first.text
        assert "Traceback" not in first.text + second.text
        assert not [p for p in first_tree if alive(p)]
        # The conftest fixture checks that no segment of this process tree is left.
    finally:
        for run in (first, second):
            if run is not None and run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGTERM)
                try:
                    run.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(run.proc.pid, signal.SIGKILL)
                    run.proc.wait()
            if run is not None and not run.proc.stdout.closed:
                run.proc.stdout.close()


@pytest.mark.parametrize(("args", "message"), [
    ([SMA, MOMENTUM], "2 strategy files given: run several strategies with --actors"),
    ([SMA, "--restart"], "--restart, --registry, --no-lanes and --no-pin need --actors"),
    ([SMA, "--no-pin"], "--restart, --registry, --no-lanes and --no-pin need --actors"),
    (["--actors", SMA, "--registry", "localhost:x"], "--registry: bad address"),
    (["--actors", SMA, MOMENTUM, "-p", "speed=3"], "no strategy has a parameter 'speed'"),
    (["--actors", SMA, "--record"], "--record is not available with --actors"),
])
def test_actor_options_are_checked_with_one_clear_line(args, message):
    out = subprocess.run([sys.executable, "-m", "engine.cli", "run", *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 2, out
    assert message in out.stderr
    assert "Traceback" not in out.stderr
