"""The command line as a user meets it: demo runs, clean Ctrl-C, and one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import segments_of

ROOT = Path(__file__).resolve().parents[2]
SMA = str(ROOT / "strategies" / "sma_cross.py")


def engine(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_run_prints_bars_decisions_and_a_summary():
    out = engine("run", SMA, "--duration", "3", "-p", "fast=2", "-p", "slow=4")
    assert out.returncode == 0, out.stderr
    assert "SmaCross" in out.stdout
    assert "bar close" in out.stdout
    assert "ran 3.0 s on providers.sim btcusd 1s" in out.stdout
    assert "SmaCross: ok" in out.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["run", "no_such_strategy.py"], "strategy file 'no_such_strategy.py' does not exist"),
    (["run", SMA, "-p", "fast=abc"], "SmaCross parameter 'fast': Input should be a valid integer"),
    (["run", SMA, "-p", "speed=3"], "SmaCross has no parameter 'speed'"),
    (["run", SMA, "-p", "fast"], "-p 'fast': expected name=value"),
    (["run", SMA, "--timeframe", "7x"], "--timeframe: bad timeframe '7x'"),
    (["run", SMA, "--duration", "-1"], "--duration must be positive"),
    (["run", SMA, "--provider", "nope_zz"], "no provider module named 'nope_zz'"),
    (["run", SMA, "--symbols", "zzzusd", "--duration", "2"], "zzzusd"),
    (["check-provider", "nope_zz"], "no provider module named 'nope_zz'"),
])
def test_bad_input_gets_one_clear_line_and_no_traceback(args, message):
    out = engine(*args)
    assert out.returncode in (1, 2), out
    assert message in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_a_strategy_that_raises_exits_non_zero_with_its_own_lines(tmp_path):
    path = tmp_path / "boom.py"
    path.write_text("from engine import Strategy\n\n\nclass Boom(Strategy):\n"
                    "    symbols = ('btcusd',)\n\n    def on_bar(self, symbol):\n"
                    "        raise RuntimeError('kaboom')\n")
    out = engine("run", str(path), "--duration", "10")
    assert out.returncode == 1
    assert f'File "{path}", line 8, in on_bar' in out.stderr
    assert "RuntimeError: kaboom" in out.stderr
    assert "engine/scheduler.py" not in out.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_ends_a_run_within_a_second_and_leaves_nothing(sig):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen([sys.executable, "-m", "engine.cli", "run", SMA, "-p", "fast=2",
                           "-p", "slow=4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, env=env) as proc:
        for line in proc.stdout:
            if "bar close" in line:
                break
        assert segments_of(proc.pid), "the run should hold segments while it runs"
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert took < 1.0, f"took {took:.2f} s to stop"
    assert "(interrupted)" in out
    assert "SmaCross: ok" in out
    assert not segments_of(proc.pid)


def test_a_shared_memory_failure_is_one_line_not_a_traceback(monkeypatch, capsys):
    import engine.live
    from engine import cli
    from engine.shm import ShmError

    def fail(*args, **kwargs):
        raise ShmError("shared-memory segment 'engine_1_ab' already exists")

    monkeypatch.setattr(engine.live, "run", fail)
    assert cli.main(["run", SMA, "--duration", "1"]) == 1
    err = capsys.readouterr().err
    assert err == ("engine run: error: shared memory: shared-memory segment 'engine_1_ab' "
                   "already exists\n")


def test_commands_run_again_in_one_process_print_each_strategy_line_once(capsys):
    # A notebook calling `engine.cli.main` twice: the second command replaces the handler the
    # first added for strategy lines instead of adding another beside it.
    import logging

    from engine.cli._run_common import configure_logging

    strat = logging.getLogger("strategy")
    saved = strat.handlers[:], strat.propagate
    try:
        configure_logging("info")
        configure_logging("info")
        logging.getLogger("strategy.Twice").warning("one line")
        assert capsys.readouterr().out.count("strategy.Twice one line") == 1
    finally:
        strat.handlers[:], strat.propagate = saved
