"""`engine backtest` as a user meets it: ISO dates, the strategy's log lines, costs in sight, and
bad options refused in one line before any work is done."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAILY = str(ROOT / "providers" / "csvfile" / "samples" / "demo_daily.csv")
SMA = str(ROOT / "strategies" / "sma_cross.py")

TALKER = (
    "from engine import Strategy\n\n"
    "class Talker(Strategy):\n"
    "    symbols = ('x',)\n\n"
    "    def on_bar(self, symbol):\n"
    "        n = len(self.ctx.ohlcv(symbol))\n"
    "        if n % 100 == 0:\n"
    "            self.log('bar %d', n)\n"
)


def engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "backtest", *args],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)


def test_dates_are_iso_and_a_costless_run_says_so(tmp_path):
    out = engine(SMA, "--data", DAILY, "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    lines = {ln.split()[0]: ln.split()[-1] for ln in out.stdout.splitlines() if ln.strip()}
    assert lines["start"] == doc["start"]
    assert len(doc["start"]) == 10
    assert doc["start"][4] == "-"
    assert "no commission, no slippage" in out.stdout


def test_strategy_log_lines_are_printed_and_written_to_a_file(tmp_path):
    strat = tmp_path / "talker.py"
    strat.write_text(TALKER)
    log = tmp_path / "run.log"
    out = engine(str(strat), "--data", DAILY, "--log", str(log))
    assert out.returncode == 0, out.stderr
    printed = [ln for ln in out.stdout.splitlines() if ln.startswith("strategy.Talker")]
    assert len(printed) >= 3
    assert log.read_text().splitlines() == printed
    quiet = engine(str(strat), "--data", DAILY, "--log-level", "warning")
    assert "strategy.Talker" not in quiet.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--leverage", "0"], "leverage is a positive multiple of equity"),
    (["--fees", "bitstamp"], "unknown fee preset 'bitstamp'"),
    (["--risk-free", "4"], "risk_free is an annual rate as a fraction"),
    (["--periods-per-year", "0"], "periods_per_year must be positive"),
    (["--json", "/no/such/folder/r.json"], "--json /no/such/folder/r.json: folder"),
    (["--report", "/no/such/folder/r.html"], "--report /no/such/folder/r.html: folder"),
])
def test_bad_options_get_one_line(args, message):
    out = engine(SMA, "--data", DAILY, *args)
    assert out.returncode == 2, out
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert "pydantic" not in out.stderr
