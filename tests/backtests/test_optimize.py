"""Sweeps and walk-forward runs over the actor pool, and the warm-up history they rely on."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import Strategy
from engine.backtests.optimize import _windows, check_metrics, optimize, parse_windows, walk_forward
from engine.backtests.replay import BacktestError, load_data, run_backtest
from engine.timefmt import iso

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = str(ROOT / "strategies" / "sma_cross.py")
DATA = str(ROOT / "providers" / "csvfile" / "samples" / "demo_daily.csv")
QUIET = {"log_bars": False, "size": 10}


def test_walk_forward_windows_follow_each_other_without_gap_or_overlap():
    times = 1_700_000_000 + 60 * np.arange(1000)
    rolling = _windows(times, ("bars", 300), ("bars", 200), anchored=False)
    assert rolling == [(0, 300, 500), (200, 500, 700), (400, 700, 900), (600, 900, 1000)]
    anchored = _windows(times, ("bars", 300), ("bars", 200), anchored=True)
    assert [w[0] for w in anchored] == [0, 0, 0, 0]
    assert [w[1:] for w in anchored] == [w[1:] for w in rolling]
    # Durations follow the clock, not the bar count: a gap of missing bars shortens a window.
    gappy = np.concatenate([times[:400], times[600:] + 0])
    spans = _windows(gappy, ("seconds", 300 * 60), ("seconds", 100 * 60), anchored=False)
    for lo, t0, t1 in spans:
        assert gappy[t0] - gappy[lo] <= 300 * 60
        assert gappy[t1 - 1] - gappy[t0] < 100 * 60
    assert [s[1] for s in spans[1:]] == [s[2] for s in spans[:-1]]
    assert spans[-1][2] == len(gappy)
    assert _windows(times, ("bars", 1000), ("bars", 10), anchored=False) == []
    assert parse_windows("365d:90d") == (("seconds", 365 * 86400), ("seconds", 90 * 86400))
    assert parse_windows("2000:500") == (("bars", 2000), ("bars", 500))
    for bad in ("2000", "1y:3m", "0:5", "a:b"):
        with pytest.raises(BacktestError, match="walk-forward"):
            parse_windows(bad)


class Watcher(Strategy):
    """Records what each on_bar sees: how many closed bars, and the SMA over them."""

    n: int = 5

    def on_start(self):
        self.line = self.ctx.indicator("sma", self.n, symbol=self.ctx.symbols[0])
        self.calls = []

    def on_bar(self, symbol):
        self.calls.append((len(self.ctx.ohlcv(symbol)), self.line[-1]))


def test_trade_from_shows_earlier_bars_as_warm_history_and_trades_only_after():
    bars, _ = load_data(DATA)
    close = next(iter(bars.values()))["close"]
    k = 300
    start = int(next(iter(bars.values()))["time"][k])
    strat = Watcher()
    result = run_backtest(strat, DATA, trade_from=start)
    assert len(strat.calls) == len(close) - k
    seen, sma = strat.calls[0]
    assert seen == k + 1  # bars 0..k are closed when the first call comes
    assert sma == pytest.approx(close[k - 4:k + 1].mean(), rel=1e-12)
    assert result.equity["time"][0] == start  # the first traded bar, by its open time
    assert len(result.equity) == len(close) - k
    assert result.stats["bars"] == len(close) - k
    traded = run_backtest(STRATEGY, DATA, params=QUIET, trade_from=start)
    assert traded.trades
    assert min(t["entry_time"] for t in traded.trades) > start
    with pytest.raises(BacktestError, match="trade_from"):
        run_backtest(Watcher(), DATA, trade_from=int(2e9))


def test_a_sweep_ranks_every_combination_with_the_backtest_s_own_numbers():
    grid = ["fast=5:15:10", "slow=20,40", "log_bars=false", "size=10"]
    result = optimize(STRATEGY, DATA, grid, workers=2, commission=0.001)
    assert [r["params"]["fast"] for r in result.rows] == [5, 5, 15, 15]
    for row in result.rows:
        assert row["error"] is None
        direct = run_backtest(STRATEGY, DATA, params=row["params"], commission=0.001)
        for k, v in row["metrics"].items():
            assert v == pytest.approx(direct.stats[k], rel=1e-12, nan_ok=True), k
    sharpe = [r["metrics"]["sharpe"] for r in result.rows]
    assert result.best == result.rows[int(np.nanargmax(sharpe))]["params"]
    assert result.n_trials == 4
    assert result.failed == []
    assert json.loads(result.to_json())["n_trials"] == 4
    # How it ran: on 2 workers, each busy evaluating a share of the wall time.
    assert (result.workers, result.bars) == (2, 756)
    busy = sum(r["seconds"] for r in result.rows)
    assert result.efficiency == pytest.approx(busy / (2 * result.seconds))
    assert 0 < result.efficiency <= 1
    assert result.speed().startswith(f"4 combinations in {result.seconds:.2f} s on 2 workers: ")
    worst = optimize(STRATEGY, DATA, grid, workers=1, metric="return_pct", minimize=True)
    returns = [r["metrics"]["return_pct"] for r in worst.rows]
    assert worst.best == worst.rows[int(np.argmin(returns))]["params"]
    # What a host may send back: a real row passes, a forged or damaged one does not.
    honest = result.rows[0]["metrics"]
    check_metrics(honest, {"cash": 100_000.0})
    for forged, why in (({"sharpe": 99.0, "return_pct": 1e6}, "does not match final_equity"),
                        ({"num_trades": 2.5}, "whole number"),
                        ({"win_rate_pct": 140.0}, "outside 0..100"),
                        ({"max_drawdown_pct": 3.0}, "wrong sign"),
                        ({"sharpe": float("nan")}, "not a finite number"),
                        ({"luck": 1.0}, "keys")):
        with pytest.raises(ValueError, match=why):
            check_metrics(honest | forged, {"cash": 100_000.0})


def test_walk_forward_picks_each_window_s_best_and_stitches_the_test_windows(tmp_path):
    grid = ["fast=5,10", "slow=30", "log_bars=false", "size=10"]
    result = walk_forward(STRATEGY, DATA, grid, "300:150", workers=2, cash=50_000)
    assert len(result.windows) == 4  # 756 bars: tests of 150, 150, 150 and 6
    equity, fills = 50_000.0, []
    for w in result.windows:
        train = [run_backtest(STRATEGY, DATA, params={"fast": f, "slow": 30, **QUIET},
                              start=w["train_start"], end=w["train_end"], cash=50_000)
                 for f in (5, 10)]
        sharpe = [t.stats["sharpe"] for t in train]
        assert w["params"]["fast"] == (5, 10)[int(np.nanargmax(sharpe))]
        assert w["in_sample"] == pytest.approx(np.nanmax(sharpe), rel=1e-12)
        test = run_backtest(STRATEGY, DATA, params=w["params"], start=w["train_start"],
                            end=w["test_end"], trade_from=w["test_start"], cash=equity)
        assert test.stats["final_equity"] == w["out_of_sample"]["final_equity"]
        equity = test.stats["final_equity"]
        fills.extend(test.fills)
    assert result.stats["final_equity"] == pytest.approx(equity, abs=1e-9)
    # The stitched fills are the test windows' own, in order, read from each window's log.
    assert len(fills) > 4
    assert len(result.fills) == len(fills)
    assert list(result.fills) == fills
    assert [result.fills[k] for k in (0, len(fills) // 2, -1)] == \
        [fills[k] for k in (0, len(fills) // 2, -1)]
    assert result.equity["time"][0] == result.windows[0]["test_start"]
    assert np.all(np.diff(result.equity["time"]) > 0)
    assert result.stats["num_trades"] + result.stats["open_trades"] == len(result.trades)
    saved = json.loads(result.to_json())
    assert saved["out_of_sample"]["final_equity"] == equity
    assert [f["client_id"] for f in saved["out_of_sample"]["fills"]] == \
        [f.client_id for f in fills]
    # Windows carry ISO 8601 dates beside their epoch seconds, in Python, JSON and the table.
    for w, kept in zip(result.windows, saved["windows"], strict=True):
        assert w["n_trials"] == 2
        for k in ("train_start", "train_end", "test_start", "test_end"):
            assert w[f"{k}_iso"] == iso(w[k], 86400) == kept[f"{k}_iso"]
            assert kept[k] == w[k]
    table = result.table()
    assert all(w["test_start_iso"] in table for w in result.windows)
    check_wf_report(result, tmp_path / "wf.html")


def check_wf_report(result, path):
    page = result.plot(path).read_text()
    assert "<title>sma_cross.py · walk-forward</title>" in page
    assert "backtest</title>" not in page
    windows = page.split("<table id='windows'>", 1)[1].split("</table>", 1)[0]
    rows = windows.split("<tr>")[2:]
    assert len(rows) == len(result.windows)
    for row, w in zip(rows, result.windows, strict=True):
        for k in ("train_start_iso", "train_end_iso", "test_start_iso", "test_end_iso"):
            assert f">{w[k]}<" in row
        assert f"fast={w['params']['fast']}" in row
    assert "Out-of-sample statistics (stitched)" in page
    assert '"equity"' in page  # the stitched equity curve's chart


def engine(*args, cwd):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=180, cwd=cwd)


def test_engine_sweep_prints_a_ranked_table_and_writes_json_and_csv(tmp_path):
    out = engine("sweep", STRATEGY, "-p", "fast=5:10:5", "-p", "slow=20", "-p", "log_bars=false",
                 "--data", DATA, "--workers", "2", "--json", "s.json", "--csv", "s.csv",
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "rank" in out.stdout
    assert "sharpe" in out.stdout
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [r["params"]["fast"] for r in rows] == [5, 10]
    with open(tmp_path / "s.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["fast"]) for r in table] == [5, 10]
    assert float(table[0]["sharpe"]) == pytest.approx(rows[0]["metrics"]["sharpe"])
    assert "2/2" in out.stderr  # the progress bar


@pytest.mark.parametrize(("args", "message"), [
    (["-p", "fast=5:x:5"], "start, stop and step must be numbers"),
    (["-p", "speed=5"], "no parameter 'speed'"),
    (["-p", "fast=5", "--metric", "luck"], "unknown metric 'luck'"),
    (["-p", "fast=5", "--walk-forward", "9000:100"], "shorter than one training window"),
    (["-p", "fast=5", "--walk-forward", "10:x"], "walk-forward test window"),
    (["-p", "fast=5", "--report", "r.html"], "--report goes with --walk-forward"),
    ([], "give the grid with -p"),
    # Output paths are checked before the run, not after it.
    (["-p", "fast=5", "--json", "missing/s.json"], "--json missing/s.json: no folder 'missing'"),
    (["-p", "fast=5", "--csv", "."], "--csv .: is a folder"),
    (["-p", "fast=5", "--walk-forward", "300:150", "--report", "no/wf.html"], "no folder 'no'"),
    # A sweep across hosts needs the shared secret.
    (["-p", "fast=5", "--registry", "127.0.0.1:1"], "no sweep secret"),
    (["-p", "fast=5", "--allow-host", "10.0.0.6"], "go with --registry"),
])
def test_engine_sweep_rejects_bad_input_in_one_line(tmp_path, args, message, monkeypatch):
    monkeypatch.delenv("ENGINE_SWEEP_SECRET", raising=False)
    out = engine("sweep", STRATEGY, "--data", DATA, *args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_engine_sweep_exits_1_naming_every_failed_combination(tmp_path):
    # sma_cross refuses fast >= slow when it starts: every combination fails.
    out = engine("sweep", STRATEGY, "-p", "fast=30,40", "-p", "slow=20", "-p", "log_bars=false",
                 "--data", DATA, "--workers", "1", "--json", "s.json", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "2 of 2 combinations failed" in out.stderr
    for fast in (30, 40):
        assert f"  fast={fast} slow=20 log_bars=False: " in out.stderr
    assert "need 0 < fast < slow" in out.stderr
    assert "Traceback" not in out.stderr
    saved = json.loads((tmp_path / "s.json").read_text())
    assert [f["params"]["fast"] for f in saved["failed"]] == [30, 40]
    assert saved["n_trials"] == 0
    assert saved["best"] is None
