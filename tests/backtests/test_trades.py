"""Trades from fills as lots: resized positions, rebalancing, flips, the end of the run, and
properties over random fill sequences checked against the clearing core's own accounting."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Strategy
from engine.backtests.replay import run_backtest
from engine.backtests.trades import LOTS, build_trades
from engine.clearing import _core
from engine.dtypes import ohlc_dtype
from tests.conftest import shared_data_dir

T0 = 1_700_000_000


def make_bars(rows, t0=T0, step=60):
    bars = np.zeros(len(rows), dtype=ohlc_dtype)
    for i, (o, h, lo, c) in enumerate(rows):
        bars[i] = (0, t0 + step * i, o, h, lo, c, 1.0, 1, (o + h + lo + c) / 4)
    return bars


class Scripted(Strategy):
    """Places the orders of `plan` (bar index -> list of (method, kwargs)) in on_bar."""

    plan: dict = {}

    def on_bar(self, symbol):
        for method, kw in self.plan.get(len(self.ctx.ohlcv(symbol)) - 1, []):
            getattr(self.ctx, method)(symbol, **kw)


# Market orders placed at bar i's close fill at bar i+1's open.
RESIZED = make_bars([(105, 106, 104, 105), (104.95, 106, 99, 100), (99.19, 102, 98, 101),
                     (101.60, 104, 100, 103), (103, 105, 102, 104)])
BUY_SELL_BUY = {0: [("buy", {"size": 10})], 1: [("sell", {"size": 4})],
                2: [("buy", {"size": 2})]}


def test_a_resized_position_gives_a_closed_trade_per_partial_close_and_open_lots():
    result = run_backtest(Scripted(plan=BUY_SELL_BUY), RESIZED, symbols=["x"])
    closed = [t for t in result.trades if not t["open"]]
    opened = [t for t in result.trades if t["open"]]
    assert [(t["side"], t["size"], t["entry_price"], t["exit_price"]) for t in closed] == [
        ("long", 4.0, 104.95, 99.19)]
    assert closed[0]["pnl"] == pytest.approx(4 * (99.19 - 104.95))
    # The position is 8 at (6 x 104.95 + 2 x 101.60) / 8: first in, first out, two lots.
    assert [(t["size"], t["entry_price"]) for t in opened] == [(6.0, 104.95), (2.0, 101.60)]
    held = sum(t["size"] * t["entry_price"] for t in opened) / sum(t["size"] for t in opened)
    assert held == pytest.approx((6 * 104.95 + 2 * 101.60) / 8)
    assert result.stats["num_trades"] == 1
    assert result.stats["open_trades"] == 2
    assert all(t["exit_price"] == 104.0 and t["exit_time"] is None for t in opened)


def test_average_cost_lots_hold_one_open_trade_at_the_accounts_average_price():
    result = run_backtest(Scripted(plan=BUY_SELL_BUY), RESIZED, symbols=["x"], lots="average")
    opened = [t for t in result.trades if t["open"]]
    assert [(t["size"], t["entry_time"]) for t in opened] == [(8.0, T0 + 60)]
    assert opened[0]["entry_price"] == pytest.approx((6 * 104.95 + 2 * 101.60) / 8)
    assert result.lots == "average"
    assert result.to_dict()["lots"] == "average"


def test_adding_then_reducing_closes_the_oldest_lot_first_with_its_share_of_the_fees():
    plan = {0: [("buy", {"size": 2})], 1: [("buy", {"size": 2})], 2: [("sell", {"size": 3})]}
    result = run_backtest(Scripted(plan=plan), RESIZED, symbols=["x"], commission=0.001)
    closed = [t for t in result.trades if not t["open"]]
    assert [(t["size"], t["entry_price"], t["exit_price"]) for t in closed] == [
        (2.0, 104.95, 101.60), (1.0, 99.19, 101.60)]
    sell_fee = 0.001 * 3 * 101.60
    assert closed[0]["fees"] == pytest.approx(0.001 * 2 * 104.95 + sell_fee * 2 / 3)
    assert closed[1]["fees"] == pytest.approx(0.001 * 1 * 99.19 + sell_fee / 3)
    total = sum(t["pnl"] for t in result.trades)
    assert total == pytest.approx(result.stats["final_equity"] - 100_000.0)


def test_a_flip_closes_the_long_and_opens_a_short_with_the_rest():
    plan = {0: [("buy", {"size": 3})], 1: [("sell", {"size": 5})]}
    result = run_backtest(Scripted(plan=plan), RESIZED, symbols=["x"], commission=0.001)
    assert [(t["side"], t["size"], t["open"]) for t in result.trades] == [
        ("long", 3.0, False), ("short", 2.0, True)]
    flip_fee = 0.001 * 5 * 99.19
    assert result.trades[1]["fees"] == pytest.approx(flip_fee * 2 / 5)
    assert result.trades[1]["entry_price"] == 99.19


class Rebalance(Strategy):
    """Hold about `dollars` (twice as much every other fortnight) in each symbol, re-sized
    every 5 bars: the position never returns to zero."""

    dollars: float = 10_000.0

    def on_bar(self, symbol):
        bars = self.ctx.ohlcv(symbol)
        if len(bars) % 5 == 0:
            scale = 1 + len(bars) % 10 // 5
            self.ctx.target(symbol, round(self.dollars * scale / bars["close"][-1]))


def _walk(n, seed, t0=T0, step=86400):
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    opens = np.r_[50.0, close[:-1]]
    return make_bars([(o, max(o, c) * 1.01, min(o, c) * 0.99, c)
                      for o, c in zip(opens, close, strict=True)], t0, step)


def test_a_strategy_that_only_rebalances_has_trades_a_win_rate_and_a_profit_factor():
    data = {"a": _walk(300, 1), "b": _walk(300, 2)}
    result = run_backtest(Rebalance(), data, commission=0.001)
    assert result.stats["num_trades"] > 20
    assert math.isfinite(result.stats["win_rate_pct"])
    assert math.isfinite(result.stats["profit_factor"])
    total = sum(t["pnl"] for t in result.trades)
    assert total == pytest.approx(result.stats["final_equity"] - 100_000.0, abs=1e-6)


def test_rebalancing_goog_and_nvda_enters_each_trade_at_a_price_the_symbol_traded():
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    result = run_backtest(Rebalance(), f"{data}/GOOG.csv,{data}/NVDA.csv", commission=0.001)
    assert result.stats["num_trades"] > 100
    for symbol in ("GOOG", "NVDA"):
        bars = result.bars[symbol]
        mine = [t for t in result.trades if t["symbol"] == symbol]
        assert mine
        for t in mine:
            assert bars["low"].min() <= t["entry_price"] <= bars["high"].max(), t
            assert t["mae_price"] <= t["entry_price"] <= t["mfe_price"]
    assert sum(t["pnl"] for t in result.trades) == pytest.approx(
        result.stats["final_equity"] - 100_000.0, abs=1e-6)


# -- the end of the run ----------------------------------------------------------------------------


def test_an_open_trade_is_listed_apart_with_its_unrealized_pnl():
    plan = {0: [("buy", {"size": 2})], 2: [("sell", {"size": 2})], 3: [("buy", {"size": 1})]}
    result = run_backtest(Scripted(plan=plan), RESIZED, symbols=["x"], commission=0.001)
    stats = result.stats
    assert stats["num_trades"] == 1
    assert stats["open_trades"] == 1
    opened = result.trades[-1]
    assert opened["open"]
    assert opened["entry_price"] == 103.0
    assert stats["unrealized_pnl"] == pytest.approx((104.0 - 103.0) - 0.001 * 103.0)
    # The closed trade alone makes the win rate.
    assert stats["win_rate_pct"] == (100.0 if result.trades[0]["pnl"] > 0 else 0.0)


def test_close_at_end_closes_at_the_last_close_with_commission_as_a_counted_trade():
    plan = {0: [("buy", {"size": 2})], 2: [("sell", {"size": 2})], 3: [("buy", {"size": 1})]}
    kept = run_backtest(Scripted(plan=plan), RESIZED, symbols=["x"], commission=0.001)
    result = run_backtest(Scripted(plan=plan), RESIZED, symbols=["x"], commission=0.001,
                          close_at_end=True)
    stats = result.stats
    assert stats["num_trades"] == 2
    assert stats["open_trades"] == 0
    assert stats["unrealized_pnl"] == 0.0
    last = result.trades[-1]
    assert (last["entry_price"], last["exit_price"], last["open"]) == (103.0, 104.0, False)
    assert last["exit_time"] == pytest.approx(RESIZED["time"][-1] + 60 * 0.999)
    fee = 0.001 * 104.0
    assert last["fees"] == pytest.approx(0.001 * 103.0 + fee)
    # Equity: the run without the close, less the closing commission.
    assert stats["final_equity"] == pytest.approx(kept.stats["final_equity"] - fee)
    assert result.equity["equity"][-1] == stats["final_equity"]
    assert stats["fees"] == pytest.approx(kept.stats["fees"] + fee)
    assert sum(t["pnl"] for t in result.trades) == pytest.approx(
        stats["final_equity"] - 100_000.0)
    fill = result.fills[-1]
    assert (fill.side, fill.size, fill.price, fill.fee) == ("sell", 1.0, 104.0, fee)
    orders = result.orders_df()
    assert orders.iloc[-1][["client_id", "status", "filled"]].tolist() == [
        "close_at_end:x", "filled", 1.0]
    assert result.to_dict()["close_at_end"] is True


def test_close_at_end_with_nothing_open_changes_nothing():
    plan = {0: [("buy", {"size": 2})], 2: [("sell", {"size": 2})]}
    a = run_backtest(Scripted(plan=plan), RESIZED, symbols=["x"], commission=0.001)
    b = run_backtest(Scripted(plan=plan), RESIZED, symbols=["x"], commission=0.001,
                     close_at_end=True)
    assert a.stats["final_equity"] == b.stats["final_equity"]
    assert len(a.fills) == len(b.fills)
    assert a.trades == b.trades


def test_a_bad_lots_choice_is_named():
    from engine import BacktestError

    with pytest.raises(BacktestError, match="lots must be one of fifo, average"):
        run_backtest(Scripted(), RESIZED, symbols=["x"], lots="lifo")


# -- properties over random fills --------------------------------------------------------------

SYMS = ("x", "y", "z")
N_BARS = 12


def _bars(seed):
    rng = np.random.default_rng(seed)
    out = {}
    for j, s in enumerate(SYMS):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, N_BARS)))
        opens = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.01, N_BARS))
        hi = np.maximum(opens, close) * (1 + rng.uniform(0, 0.02, N_BARS))
        lo = np.minimum(opens, close) * (1 - rng.uniform(0, 0.02, N_BARS))
        out[s] = make_bars(list(zip(opens, hi, lo, close, strict=True)), T0 + j, 60)
    return out


fill_specs = st.lists(st.tuples(
    st.integers(0, len(SYMS) - 1), st.integers(0, N_BARS - 1), st.booleans(),
    st.floats(0.0, 1.0), st.sampled_from(["buy", "sell"]),
    st.sampled_from([0.5, 1.0, 1.0, 2.0, 2.5, 3.0, 4.0, 0.1, 0.2, 0.3]),
    st.sampled_from([0.0, 0.0005, 0.002])), min_size=1, max_size=40)


def _fills(bars, specs):
    """Fills at a bar's open or inside it at a price in its range, in time order."""
    out = []
    for j, k, at_open, where, side, size, rate in specs:
        b = bars[SYMS[j]][k]
        price = float(b["open"]) if at_open else float(b["low"] + where * (b["high"] - b["low"]))
        time = float(b["time"]) + (0.0 if at_open else 30.0)
        out.append(SimpleNamespace(time=time, symbol=SYMS[j], side=side, price=price, size=size,
                                   fee=rate * price * size))
    out.sort(key=lambda f: f.time)
    return out


def _account_pnl(fills, bars):
    """The clearing core's books for the fills: cash plus positions at the last close, less
    the starting cash."""
    account = np.zeros(3)
    positions = np.zeros((len(SYMS), 4))
    for f in fills:
        qty = f.size if f.side == "buy" else -f.size
        _core.apply_fill(account, positions, SYMS.index(f.symbol), qty, f.price, f.fee)
    value = sum(positions[j, 0] * float(bars[s]["close"][-1]) for j, s in enumerate(SYMS))
    return account[_core.A_CASH] + value, positions[:, 0]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), fill_specs, st.sampled_from(LOTS))
def test_trades_add_up_to_the_accounts_pnl_and_stay_within_their_fills(seed, specs, lots):
    bars = _bars(seed)
    fills = _fills(bars, specs)
    trades = build_trades(fills, bars, lots)
    pnl, positions = _account_pnl(fills, bars)
    scale = sum(f.size * f.price for f in fills)
    assert math.fsum(t["pnl"] for t in trades) == pytest.approx(pnl, abs=1e-9 * scale)
    assert math.fsum(t["fees"] for t in trades) == pytest.approx(
        math.fsum(f.fee for f in fills), abs=1e-12 * scale)
    for j, s in enumerate(SYMS):
        held = sum(t["size"] * (1 if t["side"] == "long" else -1)
                   for t in trades if t["open"] and t["symbol"] == s)
        assert held == pytest.approx(positions[j], abs=1e-9)
    for t in trades:
        end = math.inf if t["open"] else t["exit_time"]
        mine = [f.price for f in fills if f.symbol == t["symbol"]
                and t["entry_time"] <= f.time <= end]
        assert min(mine) - 1e-9 <= t["entry_price"] <= max(mine) + 1e-9
        if lots == "fifo":
            assert any(f.price == t["entry_price"] and f.time == t["entry_time"] for f in fills)
        if not t["open"]:
            assert any(f.price == t["exit_price"] and f.time == t["exit_time"]
                       and f.symbol == t["symbol"] for f in fills)
        assert t["size"] > 0


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), fill_specs)
def test_excursions_equal_a_plain_scan_of_the_bars_each_trade_spans(seed, specs):
    bars = _bars(seed)
    fills = _fills(bars, specs)
    for t in build_trades(fills, bars):
        b = bars[t["symbol"]]
        first = int(np.searchsorted(b["time"], t["entry_time"], side="right")) - 1
        if t["open"]:
            last = len(b) - 1
        else:
            last = int(np.searchsorted(b["time"], t["exit_time"], side="right")) - 1
            if last > first and t["exit_time"] == b["time"][last]:
                last -= 1  # left at that bar's open: its range came after
        prices = [t["entry_price"], t["exit_price"], *b["low"][first:last + 1],
                  *b["high"][first:last + 1]]
        low, high = min(prices), max(prices)
        long = t["side"] == "long"
        assert t["mae_price"] == (low if long else high)
        assert t["mfe_price"] == (high if long else low)
        sign = 1 if long else -1
        assert t["mae_pct"] == pytest.approx((t["mae_price"] / t["entry_price"] - 1) * 100 * sign)
        assert t["mae_pct"] <= 0 <= t["mfe_pct"]
        assert t["bars_held"] == (len(b) - 1 if t["open"] else
                                  int(np.searchsorted(b["time"], t["exit_time"], "right")) - 1
                                  ) - first


def test_long_trades_read_blocks_of_bars_and_give_the_same_extremes():
    rng = np.random.default_rng(9)
    n = 5000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    bars = {"x": make_bars([(c, c * 1.01, c * 0.99, c) for c in close])}
    starts = sorted(rng.integers(0, n - 1, 40).tolist())
    fills = []
    for a in starts:
        b = int(rng.integers(a + 1, n))
        for k, side in ((a, "buy"), (b, "sell")):
            fills.append(SimpleNamespace(time=float(bars["x"]["time"][k]) + 30.0, symbol="x",
                                         side=side, price=float(close[k]), size=1.0, fee=0.0))
    fills.sort(key=lambda f: f.time)
    for t in build_trades(fills, bars):
        first = (int(t["entry_time"]) - T0) // 60
        last = (int(t["exit_time"]) - T0) // 60
        lo = min(bars["x"]["low"][first:last + 1].min(), t["entry_price"], t["exit_price"])
        hi = max(bars["x"]["high"][first:last + 1].max(), t["entry_price"], t["exit_price"])
        assert (t["mae_price"], t["mfe_price"]) == (lo, hi)
