"""Tick-level backtests: recorded ticks through the live sampler and the paper broker's rules."""

from __future__ import annotations

import pytest

from engine import Strategy
from engine.backtests.replay import BacktestError, run_backtest
from engine.dtypes import ASK, BID, TRADE, tick_dtype
from engine.store import TickRecorder

T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path))


def record(rows):
    import numpy as np

    ticks = np.zeros(len(rows), dtype=tick_dtype)
    for i, (t, typ, px, sz) in enumerate(rows):
        ticks[i] = (i, T0 + t, px, sz, 0, typ)
    with TickRecorder("sim", ["aaa"]) as rec:
        rec.add(ticks)


class Taker(Strategy):
    def on_start(self):
        self.quotes, self.bars, self.fills = 0, [], []

    def on_quote(self, quote):
        self.quotes += 1
        if self.quotes == 3:
            self.ctx.buy("aaa", 5)

    def on_bar(self, symbol):
        b = self.ctx.ohlcv(symbol)[-1]
        self.bars.append((int(b["time"] - T0), b["open"], b["close"], b["volume"]))

    def on_fill(self, fill):
        self.fills.append((fill.price, fill.size, fill.remaining))


def test_ticks_replay_through_the_sampler_and_the_book():
    record([(0.1, BID, 99.0, 3.0), (0.2, ASK, 101.0, 2.0), (0.3, TRADE, 100.0, 1.0),
            (0.9, ASK, 102.0, 10.0), (1.5, TRADE, 102.0, 2.0), (2.5, TRADE, 103.0, 1.0)])
    strat = Taker()
    result = run_backtest(strat, "aaa", ticks=True, provider="sim", cash=10_000)
    # Bought at the ask with its displayed size: 2 at 101, then the rest at 102 when the ask
    # changes; never at the last trade.
    assert strat.fills == [(101.0, 2.0, 3.0), (102.0, 3.0, 0.0)]
    # 1 s bars from the trades, closed by the replay clock.
    assert strat.bars == [(0, 100.0, 100.0, 1.0), (1, 102.0, 102.0, 2.0), (2, 103.0, 103.0, 1.0)]
    # Marked at the mid of the last book (bid 99, ask 102).
    assert result.stats["final_equity"] == pytest.approx(10_000 - 202 - 306 + 5 * 100.5)


def test_no_recorded_ticks_is_a_clear_error():
    with pytest.raises(BacktestError, match="no recorded ticks for 'zzz'"):
        run_backtest(Taker, "zzz", ticks=True)


def test_close_at_end_closes_a_tick_replay_at_the_last_bars_close():
    record([(0.1, BID, 99.0, 3.0), (0.2, ASK, 101.0, 2.0), (0.3, TRADE, 100.0, 1.0),
            (0.9, ASK, 102.0, 10.0), (1.5, TRADE, 102.0, 2.0), (2.5, TRADE, 101.0, 1.0)])
    result = run_backtest(Taker(), "aaa", ticks=True, provider="sim", cash=10_000,
                          commission=0.001, close_at_end=True)
    # Two fills opened two lots (2 at 101, 3 at 102); the last 1 s bar closed at 101.
    assert [(t["size"], t["entry_price"], t["exit_price"], t["open"]) for t in result.trades] == [
        (2.0, 101.0, 101.0, False), (3.0, 102.0, 101.0, False)]
    fee = 0.001 * 5 * 101.0
    cash = 10_000 - 202 - 306 - 0.001 * 508 + 5 * 101.0 - fee
    assert result.stats["final_equity"] == pytest.approx(cash)
    assert result.equity["equity"][-1] == pytest.approx(cash)
    assert sum(t["pnl"] for t in result.trades) == pytest.approx(cash - 10_000)
    assert result.orders_df()["status"].tolist() == ["filled", "filled"]
