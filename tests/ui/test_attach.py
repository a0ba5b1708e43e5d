"""`engine ui --attach` on runs started without a browser in sight: a plain `engine run` publishes
its run file and board, so a dashboard started later serves its candles and strategy state; an
`engine run --actors --ui` serves what its strategy actors do. No browser: the page's own HTTP
requests and websocket, made from here with the token.

Every wait is on a condition of a process, a file or a message, with a deadline; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import segments_of
from tests.ui.test_dashboard import ROOT, _wait_for, dashboard_url

# A strategy whose callback held the loop too long (a loaded machine) runs on in a thread.
RUNNING = ("running", "in its thread")


def _start(args: list[str], home: Path) -> tuple[subprocess.Popen, Path]:
    env = dict(os.environ, ENGINE_HOME=str(home), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    log = home / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", *args], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, log


def _get(url: str, path: str) -> tuple[int, dict]:
    parts = urlsplit(url)
    try:
        with urllib.request.urlopen(f"http://{parts.netloc}{path}", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _watch(url: str, symbol: str, until, timeout: float = 30) -> dict:
    """Watch `symbol` over the page's websocket; merge the updates until `until(merged)`."""
    parts = urlsplit(url)
    merged: dict = {"candles": [], "strategies": None, "log": []}

    async def main() -> None:
        with trio.fail_after(timeout):
            async with open_websocket_url(f"ws://{parts.netloc}/ws?{parts.query}") as ws:
                await ws.send_message(json.dumps({"type": "watch", "symbol": symbol}))
                while not until(merged):
                    msg = json.loads(await ws.get_message())
                    for key in ("reset", "append"):
                        if key in msg:
                            merged["candles"] += msg[key]["candles"]
                            merged.setdefault("lines", {}).update(msg[key]["lines"])
                    if "strategies" in msg:
                        merged["strategies"] = msg["strategies"]
                    merged["log"] += msg.get("log", [])

    trio.run(main)
    return merged


def _stop(proc: subprocess.Popen, log: Path) -> str:
    """Ctrl-C as a terminal sends it (to the run's process group); the run's output."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    return log.read_text()


def test_engine_ui_attaches_to_a_plain_run(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proc, log = _start(["strategies/sma_cross.py", "-p", "fast=2", "-p", "slow=4", "--paper",
                        "--account", "attached", "--status-every", "3600", "--duration", "300",
                        "-o", "seed=5"], home)
    ui = None
    try:
        run_file = home / "runs" / f"{proc.pid}.json"

        def published() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"engine run exited: {log.read_text()[-2000:]}")
            return run_file.exists()

        _wait_for(published, 60, "the run file")
        assert "dashboard:" not in log.read_text()  # published, not served
        env = dict(os.environ, ENGINE_HOME=str(home), PYTHONPATH=str(ROOT))
        ui = subprocess.Popen([sys.executable, "-m", "engine.cli", "ui", "--attach",
                               str(proc.pid)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        first = ui.stdout.readline()
        assert first.startswith("dashboard: http://127.0.0.1:"), first
        url = first.removeprefix("dashboard: ").strip()

        status, info = _get(url, "/api/info?" + urlsplit(url).query)
        assert status == 200
        assert info["live"]["pid"] == proc.pid
        assert info["live"]["symbols"] == ["btcusd"]
        assert info["live"]["account"] == "attached"
        assert _get(url, "/api/info")[0] == 403

        seen = _watch(url, "btcusd", lambda m: len(m["candles"]) >= 5 and m["strategies"]
                      and m["strategies"][0]["state"] in RUNNING)
        assert seen["strategies"][0]["name"] == "SmaCross"
        times = [c[0] for c in seen["candles"]]
        assert times == sorted(times)
        declared = {d["kind"] for d in seen["strategies"][0]["indicators"]}
        assert declared == {"sma"}

        out = _stop(proc, log)
        assert proc.returncode == 0, out
        # The run removed its run file and every segment; the dashboard saw it go and ended.
        assert not run_file.exists()
        assert not segments_of(proc.pid)
        ui.wait(timeout=30)
        assert ui.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if ui is not None:
            if ui.poll() is None:
                ui.kill()
                ui.wait()
            ui.stdout.close()


def test_a_run_killed_outright_is_swept_by_the_next(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    args = ["strategies/sma_cross.py", "--status-every", "3600", "--duration", "300",
            "-o", "seed=5"]
    proc, log = _start(args, home)
    try:
        run_file = home / "runs" / f"{proc.pid}.json"
        _wait_for(lambda: run_file.exists() or proc.poll() is not None, 60, "the run file")
        assert run_file.exists(), log.read_text()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert run_file.exists()  # nothing ran to remove it
        again, log2 = _start(["strategies/sma_cross.py", "--status-every", "3600",
                              "--duration", "1", "-o", "seed=6"], home)
        assert again.wait(timeout=60) == 0, log2.read_text()
        assert not segments_of(again.pid), (again.pid, log2.read_text())
        assert not list((home / "runs").glob("*.json"))
        # The next engine's start-up removes the dead run's segments.
        assert not segments_of(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


BOOM = """
from engine import Strategy


class Boom(Strategy):
    symbols = ("btcusd",)

    def on_start(self):
        self.n = 0
        self.log("Boom starts")

    def on_quote(self, quote):
        self.n += 1
        if self.n == 5:
            raise RuntimeError("boom at quote 5")
"""


def test_actors_run_with_ui_serves_candles_and_each_strategy_actors_state(tmp_path):
    from tests.actors.procs import free_port

    home = tmp_path / "home"
    home.mkdir()
    boom = tmp_path / "boom.py"
    boom.write_text(BOOM)
    proc, log = _start(["--actors", "strategies/sma_cross.py", str(boom), "-p", "fast=2",
                        "-p", "slow=4",
                        "--ui", "0", "--history", "1", "--status-every", "3600",
                        "--duration", "300", "--registry", f"127.0.0.1:{free_port()}"], home)
    try:
        found = dashboard_url(proc, log, 90)
        status, info = _get(found, "/api/info?" + urlsplit(found).query)
        assert status == 200
        assert info["live"]["pid"] == proc.pid  # the root, which owns the run file and board
        assert info["live"]["symbols"] == ["btcusd"]

        # State, indicators and log lines come from the strategy's own actor process.
        seen = _watch(found, "btcusd", lambda m: len(m["candles"]) >= 5 and m["strategies"]
                      and m["strategies"][0]["state"] in RUNNING
                      and m["strategies"][1]["state"] == "failed"
                      and {"sma(2)", "sma(4)"} <= set(m.get("lines", ()))
                      and any("bar close" in line["message"] for line in m["log"]), timeout=60)
        strategy = seen["strategies"][0]
        assert strategy["name"] == "SmaCross"
        assert {d["kind"] for d in strategy["indicators"]} == {"sma"}
        assert {line["strategy"] for line in seen["log"]} == {"SmaCross", "Boom"}
        assert any(line["message"].endswith("Boom starts") for line in seen["log"])
        failed = seen["strategies"][1]
        assert failed["name"] == "Boom"
        assert "boom at quote 5" in failed["error"]
        # The declared indicators are drawn over the candles, computed from the feed's bars.
        assert all(len(seen["lines"][k]) for k in ("sma(2)", "sma(4)"))

        out = _stop(proc, log)
        assert proc.returncode == 1, out  # a strategy failed
        assert "Boom: FAILED" in out
        assert "Traceback" not in out
        assert not list((home / "runs").glob("*.json"))
        assert not segments_of(proc.pid)
    finally:
        if proc.poll() is None:
            try:
                _stop(proc, log)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_the_run_file_and_board_go_when_a_run_ends_in_an_exception(tmp_path, monkeypatch):
    import engine
    from engine.ui import RunBoard

    monkeypatch.setenv("ENGINE_HOME", str(tmp_path))
    runs = tmp_path / "runs"

    class Quits(engine.Strategy):
        symbols = ("btcusd",)
        published: list = []

        def on_quote(self, quote):
            self.published[:] = [p.name for p in runs.glob("*.json")]
            raise KeyboardInterrupt  # as an interrupt landing in the middle of the run

    strat = Quits()
    with pytest.raises(KeyboardInterrupt):
        engine.run(strat, ui=RunBoard(serve=False), duration=60, history=0)
    assert strat.published == [f"{os.getpid()}.json"]
    assert not list(runs.glob("*.json"))
    # (The conftest fixture checks that its board segment and the feed's are gone.)


def test_a_run_file_that_cannot_be_written_leaves_the_run_going(tmp_path, monkeypatch, caplog):
    import engine
    from engine.ui import RunBoard

    home = tmp_path / "home"
    home.write_text("a file where the engine's folder should be")
    monkeypatch.setenv("ENGINE_HOME", str(home))

    class Counts(engine.Strategy):
        symbols = ("btcusd",)
        quotes = 0

        def on_quote(self, quote):
            self.quotes += 1

    strat = Counts()
    result = engine.run(strat, ui=RunBoard(serve=False), duration=1, history=0)
    assert result.ok
    assert strat.quotes > 0
    said = [r for r in caplog.records if r.name == "engine.ui"]
    assert len(said) == 1
    assert said[0].getMessage() == ("engine ui cannot attach to this run: its run file cannot "
                                    f"be written ({home}: File exists)")
    # (The conftest fixture checks that the board segment made before it went too.)
