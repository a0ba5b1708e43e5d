"""Replay conventions, no look-ahead, determinism and the `engine backtest` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import Strategy, kernels
from engine.backtests.replay import BacktestError, run_backtest
from engine.dtypes import ohlc_dtype

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000


def make_bars(rows):
    bars = np.zeros(len(rows), dtype=ohlc_dtype)
    for i, (o, h, lo, c) in enumerate(rows):
        bars[i] = (0, T0 + 60 * i, o, h, lo, c, 1.0, 1, (o + h + lo + c) / 4)
    return bars


BARS = make_bars([(100, 101, 99, 100), (100, 102, 98, 101), (105, 106, 104, 105),
                  (105, 107, 95, 96), (96, 97, 90, 91), (91, 92, 89, 90)])


class Scripted(Strategy):
    """Places the orders of `plan` (bar index -> list of (method, kwargs)) in on_bar."""

    plan: dict = {}

    def on_start(self):
        self.seen = []
        self.fills = []

    def on_bar(self, symbol):
        bars = self.ctx.ohlcv(symbol)
        self.seen.append((len(bars), int(bars["time"][-1]), self.ctx.now))
        for method, kw in self.plan.get(len(bars) - 1, []):
            getattr(self.ctx, method)(symbol, **kw)

    def on_fill(self, fill):
        self.fills.append((len(self.ctx.ohlcv(fill.symbol)), fill.side, fill.size, fill.price))


def run(plan, **kw):
    strat = Scripted(plan=plan)
    result = run_backtest(strat, BARS, symbols=["x"], **kw)
    return strat, result


def test_on_bar_sees_closed_bars_only_and_the_clock_reads_their_close():
    strat, _ = run({})
    assert [n for n, _, _ in strat.seen] == [1, 2, 3, 4, 5, 6]
    assert all(now == t + 60 for _, t, now in strat.seen)


def test_a_market_order_fills_at_the_next_open_with_slippage_and_commission():
    strat, result = run({0: [("buy", {"size": 2})]}, slippage=0.01, commission=0.001)
    assert strat.fills == [(1, "buy", 2.0, 100.0 + 0.01 * 100.0)]
    fill = result.fills[0]
    assert fill.fee == pytest.approx(0.001 * 101.0 * 2)


def test_limits_fill_at_their_price_inside_a_bar_or_at_the_open_on_a_gap():
    # A buy limit at 99 is reached inside bar 1 (low 98): filled at 99, not at the low.
    strat, _ = run({0: [("buy", {"size": 1, "limit": 99.0})]})
    assert strat.fills == [(1, "buy", 1.0, 99.0)]
    # A sell limit at 103 placed at bar 1's close: bar 2 opens at 105, through it: the open.
    strat, _ = run({1: [("sell", {"size": 1, "limit": 103.0})]})
    assert strat.fills == [(2, "sell", 1.0, 105.0)]


def test_stops_fill_where_the_path_crosses_them():
    # Bar 3 opens 105 and falls to 95: a sell stop at 100 fills at 100.
    strat, _ = run({2: [("sell", {"size": 1, "stop": 100.0})]})
    assert strat.fills == [(3, "sell", 1.0, 100.0)]
    # A sell stop at 93 placed at bar 3's close: bar 4 opens at 96 and falls: fills at 93.
    strat, _ = run({3: [("sell", {"size": 1, "stop": 93.0})]})
    assert strat.fills == [(4, "sell", 1.0, 93.0)]


def test_target_sends_one_order_for_the_difference_and_counts_working_orders():
    class Targeter(Strategy):
        def on_start(self):
            self.ids = []
            self.fills = []

        def on_bar(self, symbol):
            i = len(self.ctx.ohlcv(symbol)) - 1
            if i == 0:
                self.ids += [self.ctx.target(symbol, 10), self.ctx.target(symbol, 10)]
            elif i == 1:
                self.ids.append(self.ctx.target(symbol, -5))  # a reversal: one sell of 15
            elif i == 2:
                self.ids.append(self.ctx.target(symbol, -5))  # still working: nothing to do
            elif i == 3:
                self.ids.append(self.ctx.target(symbol, 0))

        def on_fill(self, fill):
            self.fills.append((len(self.ctx.ohlcv(fill.symbol)), fill.side, fill.size))

    strat = Targeter()
    result = run_backtest(strat, BARS, symbols=["x"])
    assert strat.ids[1] is None
    assert strat.ids[3] is None
    assert all(strat.ids[k] for k in (0, 2, 4))
    assert strat.fills == [(1, "buy", 10.0), (2, "sell", 15.0), (4, "buy", 5.0)]
    assert [t["side"] for t in result.trades] == ["long", "short"]


def test_an_indicator_of_indicators_equals_the_kernels_over_the_whole_series():
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    bars = make_bars([(c, c * 1.01, c * 0.99, c) for c in close])

    class Watch(Strategy):
        def on_start(self):
            fast = self.ctx.indicator("sma", 3)
            slow = self.ctx.indicator("sma", 8)
            self.cross = self.ctx.indicator("cross", fast, slow)
            self.seen = []

        def on_bar(self, symbol):
            self.seen.append(self.cross[-1])

    strat = Watch()
    run_backtest(strat, bars, symbols=["x"])
    want = kernels.cross(kernels.sma(close, 3), kernels.sma(close, 8))
    # Not called while warming up: the cross needs 8 bars for the slow average and one more.
    assert strat.seen == want.tolist()[8:]
    assert {-1.0, 1.0} <= set(strat.seen)

    class Mixed(Strategy):
        def on_start(self):
            fast = self.ctx.indicator("sma", 3)
            self.ctx.indicator("cross", fast, fields=("close", "open"))

    with pytest.raises(BacktestError, match="as lines or as fields"):
        run_backtest(Mixed(), bars, symbols=["x"])


def test_equity_is_marked_at_each_close():
    _, result = run({0: [("buy", {"size": 1})]}, cash=1000.0)
    eq = result.equity["equity"].tolist()
    # Bought at 100 at bar 1's open; marked at closes 101, 105, 96, 91, 90.
    assert eq == [1000.0, 1001.0, 1005.0, 996.0, 991.0, 990.0]
    assert result.stats["final_equity"] == 990.0
    assert result.stats["max_drawdown_pct"] == pytest.approx((990 / 1005 - 1) * 100)


def test_a_strategy_cannot_peek_at_a_bar_before_it_closes():
    class Peeker(Strategy):
        def on_start(self):
            self.sma = self.ctx.indicator("sma", 2)
            self.peeked = []

        def on_bar(self, symbol):
            n = len(self.ctx.ohlcv(symbol))
            for attempt in (lambda: self.ctx.ohlcv(symbol)[n], lambda: self.sma[n]):
                try:
                    attempt()
                    self.peeked.append(n)
                except IndexError:
                    pass

    strat = Peeker()
    run_backtest(strat, BARS, symbols=["x"])
    assert strat.peeked == []


def test_same_inputs_give_byte_identical_results():
    path = str(ROOT / "strategies" / "sma_cross_fast.py")
    rng = np.random.default_rng(3)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 3000)))
    bars = make_bars([(a, max(a, b) + 0.5, min(a, b) - 0.5, b)
                      for a, b in zip(np.r_[100, c[:-1]], c, strict=True)])
    a = run_backtest(path, bars, params={"fast": 5, "slow": 20}, commission=0.001).to_json()
    b = run_backtest(path, bars, params={"fast": 5, "slow": 20}, commission=0.001).to_json()
    assert a == b
    assert json.loads(a)["num_trades"] > 10


def test_a_corrupt_data_file_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,x,2,1,1,1\n")
    with pytest.raises(BacktestError, match=r"bad\.csv:3"):
        run_backtest(Scripted, str(bad))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BacktestError, match="broken.parquet"):
        run_backtest(Scripted, str(broken))


def test_engine_backtest_writes_json_with_the_documented_keys(tmp_path):
    data = tmp_path / "demo.csv"
    rows = ["Date,Open,High,Low,Close,Volume"]
    rng = np.random.default_rng(5)
    px = 100.0
    for d in range(400):
        o = px
        px *= float(np.exp(rng.normal(0, 0.02)))
        rows.append(f"2020-01-{1 + d % 28:02d}" if False else
                    f"{np.datetime64('2020-01-01') + d},{o:.2f},{max(o, px) + 1:.2f},"
                    f"{min(o, px) - 1:.2f},{px:.2f},1000")
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "backtest",
                           str(ROOT / "strategies" / "sma_cross_fast.py"), "--data", str(data),
                           "--commission", "0.001", "-p", "fast=5", "-p", "slow=20",
                           "--json", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    for key in ("final_equity", "return_pct", "num_trades", "sharpe", "max_drawdown_pct",
                "trades", "equity"):
        assert key in result
    assert len(result["equity"]) == 400
    assert "final equity" in proc.stdout


def test_async_and_sync_handlers_run_in_event_order_and_name_themselves_when_they_fail():
    class Handlers(Strategy):
        boom: bool = False

        def on_start(self):
            self.heard = []

        def on_bar(self, symbol):
            if len(self.ctx.ohlcv(symbol)) == 1:
                self.ctx.buy(symbol, 1)
                self.ctx.buy(symbol, 2)

        def on_order(self, event):
            self.heard.append(("order", type(event).__name__))

        async def on_fill(self, fill):
            if self.boom:
                raise RuntimeError("fill handler broke")
            self.heard.append(("fill", fill.size))

    strat = Handlers()
    run_backtest(strat, BARS, symbols=["x"])
    assert strat.heard == [("order", "OrderAccepted"), ("order", "OrderAccepted"),
                           ("fill", 1.0), ("fill", 2.0)]
    with pytest.raises(BacktestError, match=r"Handlers\.on_fill raised:[\s\S]*fill handler broke"):
        run_backtest(Handlers(boom=True), BARS, symbols=["x"])
