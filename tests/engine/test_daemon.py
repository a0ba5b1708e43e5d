"""`engine daemon`: commands forked warm from a background engine process behave as they do
alone (output, exit status, Ctrl-C), reach only this user, and leave nothing behind."""

from __future__ import annotations

import math
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENGINE = [sys.executable, "-m", "engine.cli"]

# A strategy that tells the test (through a FIFO) that it is running and its pid, then works
# until it is interrupted: a command still running when the test acts on it.
BUSY = """
import os
from engine import Strategy


class Busy(Strategy):
    def on_start(self):
        with open(os.environ["BUSY_FIFO"], "w") as fifo:
            fifo.write(f"{os.getpid()}\\n")
        while True:
            sum(range(10_000))

    def on_bar(self, symbol):
        pass
"""


@pytest.fixture
def env(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    out = {k: v for k, v in os.environ.items() if k != "ENGINE_NO_DAEMON"}
    out["ENGINE_RUNTIME_DIR"] = str(runtime)
    out["ENGINE_HOME"] = str(tmp_path / "home")
    return out


@pytest.fixture
def csv(tmp_path) -> Path:
    path = tmp_path / "bars.csv"
    rows = ["date,open,high,low,close,volume"]
    for i in range(300):
        c = 100.0 + 8.0 * math.sin(i / 7.0) + 0.05 * i
        day = time.strftime("%Y-%m-%d", time.gmtime(1_400_000_000 + 86_400 * i))
        rows.append(f"{day},{c - 0.4:.2f},{c + 1:.2f},{c - 1:.2f},{c:.2f},500")
    path.write_text("\n".join(rows) + "\n")
    return path


def engine(env: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*ENGINE, *args], env=env, capture_output=True, text=True,
                          timeout=120, **kw)


def status(env: dict) -> dict | None:
    code = ("import json, sys\nfrom engine.cli import _daemon\n"
            "json.dump(_daemon.status(), sys.stdout)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    import json

    return json.loads(out.stdout)


def gone_within(pid: int, timeout: float) -> bool:
    """Whether process `pid` (not a child of this one) exits within `timeout` seconds: waits
    on a pidfd, which becomes readable when the process ends."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.fixture
def daemon(env):
    started = engine(env, "daemon", "start", "--idle", "300")
    assert started.returncode == 0, started.stderr
    info = status(env)
    yield info
    engine(env, "daemon", "stop")
    assert gone_within(info["pid"], 30)


def test_a_backtest_through_the_daemon_prints_exactly_what_it_prints_alone(env, csv, daemon):
    args = ("backtest", "strategies/sma_cross.py", "--data", str(csv), "--commission", "0.001",
            "-p", "fast=5", "-p", "slow=20")
    warm = engine(env, *args)
    alone = engine({**env, "ENGINE_NO_DAEMON": "1"}, *args)
    assert warm.returncode == alone.returncode == 0, warm.stderr
    assert warm.stdout == alone.stdout
    assert "trades" in warm.stdout
    assert status(env)["served"] == 1  # it ran in the daemon, not beside it
    # Bad input: the same one line and exit status.
    bad = ("backtest", "strategies/sma_cross.py", "--data", str(csv), "--commission", "x")
    warm, alone = engine(env, *bad), engine({**env, "ENGINE_NO_DAEMON": "1"}, *bad)
    assert warm.returncode == alone.returncode == 2
    assert warm.stderr == alone.stderr
    assert "--commission" in warm.stderr
    missing = ("backtest", "strategies/sma_cross.py", "--data", str(csv.with_name("no.csv")))
    warm, alone = engine(env, *missing), engine({**env, "ENGINE_NO_DAEMON": "1"}, *missing)
    assert warm.returncode == alone.returncode != 0
    assert warm.stderr == alone.stderr
    assert "no.csv" in warm.stderr
    assert status(env)["served"] == 3  # argparse's errors too


def test_the_command_works_in_the_shells_directory_with_relative_paths(env, csv, daemon,
                                                                        tmp_path):
    out = engine(env, "backtest", str(Path.cwd() / "strategies/sma_cross.py"), "--data",
                 csv.name, "--json", "result.json", cwd=csv.parent)
    assert out.returncode == 0, out.stderr
    assert (csv.parent / "result.json").stat().st_size > 0


def _busy_command(env: dict, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    strat, fifo = tmp_path / "busy.py", tmp_path / "busy.fifo"
    strat.write_text(BUSY)
    os.mkfifo(fifo)
    csv = tmp_path / "few.csv"
    csv.write_text("date,open,high,low,close,volume\n2020-01-01,1,2,0.5,1.5,1\n"
                   "2020-01-02,1.5,2,1,1.8,1\n")
    proc = subprocess.Popen([*ENGINE, "backtest", str(strat), "--data", str(csv)],
                            env={**env, "BUSY_FIFO": str(fifo)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    with open(fifo) as f:  # blocks until the strategy runs
        command = int(f.readline())
    return proc, command


def test_ctrl_c_reaches_the_command_and_ends_it_as_it_would_alone(env, daemon, tmp_path):
    proc, command = _busy_command(env, tmp_path)
    assert command != proc.pid  # the command runs in the daemon's child
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in err
    assert "Traceback" not in err
    assert gone_within(command, 5)
    assert status(env)["running"] == 0


def test_a_client_killed_with_9_takes_its_command_with_it(env, daemon, tmp_path):
    proc, command = _busy_command(env, tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    assert gone_within(command, 10)
    assert status(env)["pid"] == daemon["pid"]  # the daemon serves on


def test_the_socket_is_private_and_an_open_directory_is_refused(env, csv, tmp_path):
    started = engine(env, "daemon", "start", "--idle", "300")
    assert started.returncode == 0, started.stderr
    info = status(env)
    try:
        runtime = Path(env["ENGINE_RUNTIME_DIR"])
        (sock,) = runtime.glob("daemon-*.sock")
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        runtime.chmod(0o755)
        # A client never hands its environment to a socket others could have put there: it
        # runs the command itself.
        out = engine(env, "backtest", "strategies/sma_cross.py", "--data", str(csv))
        assert out.returncode == 0
        assert "trades" in out.stdout
        runtime.chmod(0o700)
        assert status(env)["served"] == 0
        runtime.chmod(0o755)
        again = engine(env, "daemon", "start")
        assert again.returncode == 2
        assert again.stderr.count("\n") == 1
        assert "open to other users" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        Path(env["ENGINE_RUNTIME_DIR"]).chmod(0o700)
        engine(env, "daemon", "stop")
    assert gone_within(info["pid"], 30)


def test_a_command_from_another_environment_runs_on_its_own(env, csv, daemon):
    out = engine({**env, "NUMBA_OPT": "1"}, "backtest", "strategies/sma_cross.py", "--data",
                 str(csv))
    assert out.returncode == 0
    assert "trades" in out.stdout
    assert status(env)["served"] == 0


def test_stop_status_and_a_daemon_killed_with_9(env, csv):
    assert engine(env, "daemon", "status").returncode == 3
    assert engine(env, "daemon", "start", "--idle", "300").returncode == 0
    first = status(env)
    again = engine(env, "daemon", "start")
    assert "already running" in again.stdout
    assert status(env)["pid"] == first["pid"]
    os.kill(first["pid"], signal.SIGKILL)
    assert gone_within(first["pid"], 10)
    # Its socket is left behind: commands run alone, and the next start replaces it.
    out = engine(env, "backtest", "strategies/sma_cross.py", "--data", str(csv))
    assert out.returncode == 0
    assert "trades" in out.stdout
    assert engine(env, "daemon", "status").returncode == 3
    assert engine(env, "daemon", "start", "--idle", "300").returncode == 0
    second = status(env)
    assert second["pid"] != first["pid"]
    stopped = engine(env, "daemon", "stop")
    assert f"stopped, pid {second['pid']}" in stopped.stdout
    assert gone_within(second["pid"], 30)
    assert not list(Path(env["ENGINE_RUNTIME_DIR"]).glob("*.sock"))
    assert "not running" in engine(env, "daemon", "stop").stdout


def test_an_idle_daemon_exits_by_itself(env):
    assert engine(env, "daemon", "start", "--idle", "1").returncode == 0
    pid = status(env)["pid"]
    assert gone_within(pid, 30)
    assert not list(Path(env["ENGINE_RUNTIME_DIR"]).glob("*.sock"))
    bad = engine(env, "daemon", "start", "--idle", "0")
    assert bad.returncode == 2
    assert "--idle" in bad.stderr
