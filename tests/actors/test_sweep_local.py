"""Sweeps on this host's plain worker processes: from a script without a `__main__` guard, from
standard input, from a Jupyter kernel, and stopped by Ctrl-C at once without leaving a process,
a segment or a warning behind."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.backtests.replay import run_backtest
from tests.actors.procs import alive, tree
from tests.conftest import segments_of

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = str(ROOT / "strategies" / "sma_cross.py")
DATA = str(ROOT / "providers" / "csvfile" / "samples" / "demo_daily.csv")
GRID = {"fast": [5, 10], "slow": [20, 30], "log_bars": False}

# No `if __name__ == "__main__":` guard, on purpose: a worker that imported this module again
# would print the marker again, and run a sweep of its own inside a sweep.
SCRIPT = f"""
print("main module ran", flush=True)
import engine
result = engine.optimize({STRATEGY!r}, {DATA!r}, {GRID!r}, metric="return_pct", workers=2)
print("best", result.best["fast"], result.best["slow"], flush=True)
print("errors", [r["error"] for r in result.rows], flush=True)
wf = engine.walk_forward({STRATEGY!r}, {DATA!r}, {GRID!r}, "300:150", metric="return_pct",
                         workers=2)
print("windows", len(wf.windows), flush=True)

# A strategy class defined right here: the workers get it written out from its source.
import importlib.util
spec = importlib.util.spec_from_file_location("file_strategy", {STRATEGY!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
SIZE = 10


def half(x):
    return x / 2


class Local(mod.SmaCross):
    def on_start(self):
        self.extra = half(2 * SIZE) + SIZE  # names from the script, carried over
        super().on_start()


try:
    mine = engine.optimize(Local, {DATA!r}, {GRID!r}, metric="return_pct", workers=2)
    print("class", mine.strategy, mine.best["fast"], mine.best["slow"], flush=True)
except engine.BacktestError as exc:
    print("class error", exc, flush=True)
"""


def expected_best() -> tuple[int, int]:
    returns = {(f, s): run_backtest(STRATEGY, DATA, params={"fast": f, "slow": s,
                                                             "log_bars": False}
                                    ).stats["return_pct"]
               for f in GRID["fast"] for s in GRID["slow"]}
    return max(returns, key=returns.get)


def check_output(out: subprocess.CompletedProcess, best: tuple[int, int], source: bool
                 ) -> None:
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "Warning" not in out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("main module ran") == 1  # no worker imported the caller's __main__
    assert f"best {best[0]} {best[1]}" in lines
    assert "errors [None, None, None, None]" in lines
    assert "windows 4" in lines
    if source:
        assert f"class Local.py {best[0]} {best[1]}" in lines
    else:  # standard input keeps no source to write out: one clear line says so
        assert "class error strategy Local: no source for 'Local'" in out.stdout


@pytest.mark.parametrize("how", ["script without a main guard", "standard input"])
def test_a_sweep_runs_from_a_script_without_a_guard_and_from_standard_input(tmp_path, how):
    best = expected_best()
    script = tmp_path / "sweep_script.py"
    script.write_text(SCRIPT)
    if how == "standard input":
        out = subprocess.run([sys.executable, "-"], input=SCRIPT, capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    else:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
    check_output(out, best, source=how != "standard input")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jupyter's own path migration notes
def test_a_sweep_runs_in_a_jupyter_kernel():
    from jupyter_client.manager import start_new_kernel

    best = expected_best()
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
    outputs: list[str] = []
    errors: list[str] = []

    def hook(msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            outputs.append(content["text"])
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))

    try:
        reply = kc.execute_interactive(SCRIPT, timeout=300, output_hook=hook)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert errors == []
    assert reply["content"]["status"] == "ok"
    text = "".join(outputs)
    assert f"best {best[0]} {best[1]}" in text
    assert "windows 4" in text
    assert f"class Local.py {best[0]} {best[1]}" in text  # a class defined in the notebook


def _lines(stream, into: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        into.put(line)
    into.put(None)


def _sessions(pids: set[int]) -> set[int]:
    """The session ids of those processes (workers lead sessions of their own)."""
    out = set()
    for pid in pids:
        try:
            out.add(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3]))
        except OSError:
            pass
    return out


def test_ctrl_c_ends_a_sweep_at_once_leaving_no_process_segment_or_warning(tmp_path):
    # ~4,000 combinations: minutes of work, interrupted as soon as the first result is in.
    # As from a terminal: a suite started in the background (`make test &`) ignores SIGINT,
    # and a child would inherit that.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "sweep", STRATEGY, "--data", DATA,
             "-p", "fast=2:40:1", "-p", "slow=41:140:1", "-p", "log_bars=false",
             "--workers", "2"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, before)
    err: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stderr, err), daemon=True)
    reader.start()
    seen = []
    try:
        deadline = time.monotonic() + 240
        while not any("/3900" in line for line in seen):  # the progress bar's first line
            line = err.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "".join(seen)
            seen.append(line)
        workers = {p for p in tree(proc.pid) if "engine.actors.sweep_worker" in _cmd(p)}
        assert len(workers) == 2
        below = set().union(*(tree(w) for w in workers)) | workers
        assert _sessions(workers) == workers  # each leads its own session: Ctrl-C is ours
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        proc.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    rest = []
    while (line := err.get_nowait()) is not None:
        rest.append(line)
    stderr = "".join(seen + rest)
    assert proc.returncode == 130, stderr
    assert took < 2.0, f"the sweep took {took:.2f} s to stop"
    assert rest == ["engine sweep: interrupted\n"], stderr  # no warning, no traceback
    # Every worker, and whatever a worker started, is gone (polled: reaping is not instant).
    deadline = time.monotonic() + 10
    while any(alive(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in below if alive(p)]
    assert segments_of(proc.pid, *below) == set()
    print(f"Ctrl-C to exit: {took:.3f} s")


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
