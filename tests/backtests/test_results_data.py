"""Results as data: trades, fills, orders and the equity curve as DataFrames with the JSON's
columns and a UTC DatetimeIndex; ISO times beside epoch seconds in the JSON; the public names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine import Strategy
from engine.backtests.replay import run_backtest
from engine.timefmt import iso
from tests.backtests.test_trades import RESIZED, T0, Scripted, make_bars

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400


class Busy(Strategy):
    """One order of each fate: filled, cancelled by the strategy, cancelled by its time in
    force, rejected by the broker, and still working at the end."""

    def on_bar(self, symbol):
        i = len(self.ctx.ohlcv(symbol)) - 1
        if i == 0:
            self.ctx.buy(symbol, 2)
            self.keep = self.ctx.buy(symbol, 1, limit=50.0)
            self.ctx.buy(symbol, 1, limit=60.0, tif="IOC")
        elif i == 1:
            self.ctx.cancel(self.keep)
            self.ctx.sell(symbol, 5)  # would go short: rejected without shorting
        elif i == 2:
            self.ctx.sell(symbol, 1, limit=500.0)


@pytest.fixture(scope="module")
def busy():
    daily = RESIZED.copy()
    daily["time"] = 1_199_145_600 + DAY * np.arange(len(daily))  # 2008-01-01, midnights
    return run_backtest(Busy(), daily, symbols=["x"], allow_short=False, commission=0.001)


def test_orders_df_holds_every_order_with_its_final_state_and_reason(busy):
    orders = busy.orders_df()
    assert orders["status"].tolist() == ["filled", "cancelled", "cancelled", "rejected",
                                         "working"]
    assert orders["reason"].tolist()[1:4] == [
        "cancelled", "IOC: not filled at once",
        "short selling is not allowed: position would reach -3"]
    assert pd.isna(orders["reason"].iloc[0])
    first = orders.iloc[0]
    assert (first["filled"], first["avg_fill_price"]) == (2.0, 104.95)
    assert first["fees"] == pytest.approx(0.001 * 2 * 104.95)
    assert orders["filled"].tolist()[1:] == [0.0] * 4


def test_each_frame_has_the_json_columns_and_a_utc_datetime_index(busy):
    data = json.loads(busy.to_json())
    frames = {"trades": busy.trades_df(), "fills": busy.fills_df(), "orders": busy.orders_df(),
              "equity": busy.equity_df()}
    for key, df in frames.items():
        assert isinstance(df.index, pd.DatetimeIndex), key
        assert str(df.index.tz) == "UTC", key
        assert sorted(df.columns) == sorted(data[key][0]), key  # JSON keys are sorted
        assert len(df) == len(data[key]), key
    assert frames["equity"]["equity"].tolist() == busy.equity["equity"].tolist()
    assert frames["equity"].index[0] == pd.Timestamp(int(busy.equity["time"][0]), unit="s",
                                                     tz="UTC")
    trades = frames["trades"]
    assert trades.index[0] == pd.Timestamp("2008-01-02", tz="UTC")  # entered at that open
    assert trades["pnl"].tolist() == [t["pnl"] for t in busy.trades]


def test_json_times_are_epoch_seconds_with_iso_beside_them(busy):
    data = json.loads(busy.to_json())
    trade = data["trades"][0]
    assert trade["entry_time_iso"] == "2008-01-02" == iso(trade["entry_time"], DAY)
    assert trade["exit_time"] is None
    assert trade["exit_time_iso"] is None
    for key in ("fills", "orders", "equity"):
        for row in data[key]:
            assert row["time_iso"] == iso(row["time"], DAY)
    for key in ("entry_time", "exit_time", "pnl", "mae_pct", "mfe_pct", "bars_held", "open"):
        assert key in trade


def test_frames_of_a_run_without_trades_keep_their_columns():
    result = run_backtest(Scripted(), RESIZED, symbols=["x"])
    for df in (result.trades_df(), result.fills_df(), result.orders_df()):
        assert len(df) == 0
        assert len(df.columns) > 5
        assert isinstance(df.index, pd.DatetimeIndex)


def test_intraday_times_are_shown_with_their_time_of_day():
    plan = {0: [("buy", {"size": 1})]}
    result = run_backtest(Scripted(plan=plan), RESIZED, symbols=["x"], close_at_end=True)
    trade = result.to_dict()["trades"][0]
    assert trade["entry_time_iso"] == "2023-11-14T22:14:20Z" == iso(T0 + 60)
    assert trade["exit_time_iso"] == iso(T0 + 4 * 60 + 59.94) == "2023-11-14T22:18:19.940Z"


def test_backtest_error_is_public():
    import engine
    from engine.backtests.replay import BacktestError

    assert engine.BacktestError is BacktestError
    with pytest.raises(engine.BacktestError, match="no bars"):
        engine.backtest(Scripted(), make_bars([(1, 1, 1, 1)]), symbols=["x"], start=T0 + 60)


def test_engine_backtest_close_at_end_and_lots_reach_the_json(tmp_path):
    data = tmp_path / "demo.csv"
    rows = ["Date,Open,High,Low,Close,Volume"]
    day = np.datetime64("2020-01-01")
    for d, (o, h, lo, c) in enumerate(zip(*(RESIZED[f] for f in ("open", "high", "low",
                                                                 "close")), strict=True)):
        rows.append(f"{day + d},{o},{h},{lo},{c},1000")
    data.write_text("\n".join(rows) + "\n")
    strat = tmp_path / "hold.py"
    strat.write_text("from engine import Strategy\n\n\nclass Hold(Strategy):\n"
                     "    def on_bar(self, symbol):\n"
                     "        if len(self.ctx.ohlcv(symbol)) == 1:\n"
                     "            self.ctx.buy(symbol, 3)\n")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "backtest", str(strat), "--data",
                           str(data), "--close-at-end", "--lots", "average", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert (result["close_at_end"], result["lots"], result["num_trades"]) == (True, "average", 1)
    trade = result["trades"][0]
    assert (trade["entry_time_iso"], trade["exit_price"]) == ("2020-01-02", 104.0)
