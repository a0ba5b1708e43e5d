"""A backtest at scale: results kept as columns and read as the same records, bars replayed in
place without being written, plain market orders built without validation yet equal to
validated ones, the strategy's log lines kept directly, and universes stepped once per time."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Strategy
from engine.backtests._equity import equity_curve, equity_one
from engine.backtests.metrics import drawdowns
from engine.backtests.replay import run_backtest
from engine.backtests.trades import Trades
from engine.orders import SubmitOrder, market_order
from tests.backtests.bars import walk

DAY = 86400


class Flip(Strategy):
    """Long on an up bar, short on a down bar, logging each decision."""

    def on_bar(self, symbol):
        c = self.ctx.ohlcv(symbol)["close"]
        if len(c) > 1:
            up = c[-1] > c[-2]
            self.log("%s %s at %.2f", symbol, "up" if up else "down", c[-1])
            self.ctx.target(symbol, 3.0 if up else -3.0)


@pytest.fixture(scope="module")
def flip():
    return run_backtest(Flip, walk(400, 1), symbols=["x"], commission=0.001)


def test_trades_read_as_a_list_of_dicts_equal_to_the_ones_built_from_the_fills(flip):
    from engine.backtests.trades import build_trades

    assert isinstance(flip.trades, Trades)
    rebuilt = build_trades(list(flip.fills), flip.bars)
    assert flip.trades == rebuilt
    assert rebuilt == list(flip.trades)
    assert len(flip.trades) == len(rebuilt) > 100
    assert flip.trades[-1] == rebuilt[-1]
    assert flip.trades[3] == rebuilt[3]
    assert flip.trades[5:9] == rebuilt[5:9]
    assert flip.trades[::50] == rebuilt[::50]
    with pytest.raises(IndexError):
        flip.trades[len(rebuilt)]
    # The statistics from the columns are those of the dicts.
    closed = [t for t in rebuilt if not t["open"]]
    assert flip.stats["num_trades"] == len(closed)
    assert flip.stats["win_rate_pct"] == pytest.approx(
        100.0 * sum(t["pnl"] > 0 for t in closed) / len(closed))
    assert flip.stats["unrealized_pnl"] == sum(t["pnl"] for t in rebuilt if t["open"])


def test_fills_are_events_built_from_the_columnar_log_and_match_the_account(flip):
    fills = list(flip.fills)
    assert [f.fill_id for f in fills] == list(range(1, len(fills) + 1))
    assert flip.fills[-1] == fills[-1]
    assert flip.fills[0] == fills[0]
    cash = flip.stats["initial_cash"] - sum(
        (f.size if f.side == "buy" else -f.size) * f.price + f.fee for f in fills)
    held = sum(f.size if f.side == "buy" else -f.size for f in fills)
    assert flip.equity["equity"][-1] == pytest.approx(cash + held * flip.bars["x"]["close"][-1])
    assert json.loads(flip.to_json())["fills"][0]["client_id"] == fills[0].client_id


def test_equity_curve_is_built_when_read_with_times_and_drawdowns(flip):
    curve = flip.equity
    assert curve.dtype.names == ("time", "equity", "drawdown_pct")
    assert curve["time"].tolist() == flip.bars["x"]["time"].tolist()
    peak = np.maximum.accumulate(curve["equity"])
    assert np.allclose(curve["drawdown_pct"], (curve["equity"] / peak - 1) * 100)
    assert flip.equity is curve  # built once
    assert flip.stats["final_equity"] == curve["equity"][-1]


def test_bars_replay_in_place_without_being_written():
    bars = walk(300, 2)
    bars["index"] = np.arange(len(bars))
    result = run_backtest(Flip, bars, symbols=["x"])
    assert np.shares_memory(result.bars["x"], bars)  # held once, not copied
    # A caller's array numbered otherwise is copied for the replay, never renumbered.
    other = walk(300, 2)
    other["index"] = 7
    before = other.copy()
    again = run_backtest(Flip, other, symbols=["x"])
    assert np.array_equal(other, before)
    assert again.to_json() == result.to_json()


class Indexes(Strategy):
    def on_bar(self, symbol):
        self.seen = self.ctx.ohlcv(symbol)["index"].tolist()


def test_the_strategy_sees_bars_numbered_from_zero_whatever_the_input_holds():
    bars = walk(20, 3)
    bars["index"] = 99
    strat = Indexes()
    run_backtest(strat, bars, symbols=["x"])
    assert strat.seen == list(range(20))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(symbol=st.text(min_size=1, max_size=8), side=st.sampled_from(["buy", "sell"]),
       size=st.floats(min_value=1e-9, max_value=1e12, allow_nan=False),
       reduce_only=st.booleans(), time=st.one_of(st.none(), st.floats(0, 4e9)),
       strategy=st.one_of(st.none(), st.text(max_size=8)))
def test_a_market_order_built_without_validation_equals_the_validated_one(
        symbol, side, size, reduce_only, time, strategy):
    fast = market_order("o1", symbol, side, size, reduce_only, time, strategy)
    slow = SubmitOrder(client_id="o1", symbol=symbol, side=side, size=size,
                       order_type="market", limit_price=None, stop_price=None, tif="GTC",
                       reduce_only=reduce_only, post_only=False, time=time, strategy=strategy)
    assert fast == slow
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.describe() == slow.describe()
    assert fast.model_copy(update={"size": 1.0}).size == 1.0
    assert fast.size == size


def test_engine_orders_keep_their_checks_on_what_the_user_gives():
    class Bad(Strategy):
        def on_bar(self, symbol):
            self.ctx.buy(symbol, -1.0)

    with pytest.raises(Exception, match="greater than 0"):
        run_backtest(Bad, walk(5, 4), symbols=["x"])


class Logged(Flip):
    def on_start(self):
        self.direct = "_log_sink" in self.__dict__  # lines appended without logging


@pytest.fixture
def plain_logging():
    """Logging as a fresh process has it: no handler on "strategy" (a CLI test run earlier
    in the session leaves one, with propagation off), restored afterwards."""
    strategies = logging.getLogger("strategy")
    saved = strategies.handlers[:], strategies.propagate
    strategies.handlers.clear()
    strategies.propagate = True
    yield
    strategies.handlers[:], strategies.propagate = saved


def test_log_lines_kept_directly_equal_the_lines_logging_renders(plain_logging):
    root = logging.getLogger()
    # Without another handler (pytest's own removed) the backtest keeps the lines directly.
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        direct = Logged()
        fast = run_backtest(direct, walk(400, 1), symbols=["x"], commission=0.001)
    finally:
        root.handlers[:] = saved
    # With one on the root logger, every line goes through logging itself.
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep = Keep()
    root.addHandler(keep)
    try:
        through = Logged()
        slow = run_backtest(through, walk(400, 1), symbols=["x"], commission=0.001)
    finally:
        root.removeHandler(keep)
    assert direct.direct
    assert not through.direct
    assert fast.log == slow.log
    assert len(fast.log) == 399
    assert fast.log[0] == "2020-09-13T12:28:40Z x up at 100.35"
    assert seen == slow.log


class Steps(Strategy):
    """Records each on_bars call: the symbols, the clock, what each symbol shows."""

    timeframe = "1d"

    def on_start(self):
        self.calls = []

    def on_bars(self, symbols):
        self.calls.append((list(symbols), self.ctx.now,
                           {s: len(self.ctx.ohlcv(s)) for s in self.ctx.symbols}))
        if len(self.calls) == 3:
            self.ctx.buy(symbols[0], 1)


def test_on_bars_hears_each_time_once_with_its_symbols_in_order():
    start = 1_262_304_000
    a, b, c = walk(6, 5, start, DAY), walk(6, 6, start, DAY), walk(4, 7, start + 2 * DAY, DAY)
    strat = Steps()
    result = run_backtest(strat, {"a": a, "b": b, "c": c}, cash=10_000.0)
    assert [s for s, _, _ in strat.calls] == [["a", "b"], ["a", "b"], ["a", "b", "c"],
                                               ["a", "b", "c"], ["a", "b", "c"],
                                               ["a", "b", "c"]]
    # At each call the clock is the step's close and every symbol shows its bars to then.
    assert [t for _, t, _ in strat.calls] == [start + DAY * (i + 1) for i in range(6)]
    assert strat.calls[2][2] == {"a": 3, "b": 3, "c": 1}
    assert strat.calls[-1][2] == {"a": 6, "b": 6, "c": 4}
    # The order placed at the third close filled at the next open.
    assert result.fills[0].price == a["open"][3]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 60), seed=st.integers(0, 2**16), n_fills=st.integers(0, 20))
def test_one_symbols_equity_kernel_equals_the_general_one(n, seed, n_fills):
    rng = np.random.default_rng(seed)
    closes = 100 + rng.normal(0, 5, n)
    step = np.sort(rng.integers(0, n, n_fills))
    qty, px, fee = rng.normal(0, 3, n_fills), rng.uniform(50, 150, n_fills), rng.uniform(0, 1,
                                                                                          n_fills)
    one, one_x = equity_one(closes, step, qty, px, fee, 1000.0)
    gen, gen_x = equity_curve(np.zeros(n, dtype=np.int64), closes, 1, step,
                              np.zeros(n_fills, dtype=np.int64), qty, px, fee, 1000.0,
                              np.ones(n, dtype=np.bool_))
    assert one.tolist() == gen.tolist()
    assert one_x.tolist() == gen_x.tolist()


def test_drawdowns_match_the_running_peak_formula_and_keep_nan():
    eq = np.array([100.0, 110.0, 99.0, 121.0, math.nan, 130.0])
    dd = drawdowns(eq)
    assert dd[:4].tolist() == [0.0, 0.0, (99.0 / 110.0 - 1) * 100, 0.0]
    assert dd[4:].tolist() == [0.0, 0.0]  # NaN peaks stay NaN: no drawdown is measured
    assert drawdowns(np.array([-5.0, -3.0])).tolist() == [0.0, 0.0]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(2, 400), seed=st.integers(0, 2**16), shift=st.sampled_from([0.0, -1100.0]))
def test_drawdown_figures_match_an_independent_computation(n, seed, shift):
    from engine.backtests.metrics import compute_stats

    rng = np.random.default_rng(seed)
    equity = 1000 * np.exp(np.cumsum(rng.normal(0, 0.02, n))) + shift
    times = 1_600_000_000 + np.cumsum(rng.integers(1, 3 * DAY, n))
    stats = compute_stats(times, equity, np.zeros(n, dtype=bool), [], 0.0, 1000.0,
                          period=60, bootstrap=False)
    # Independently: the running peak, the drawdowns from it, and the time from each peak
    # to the first point back at one (or to the end).
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (equity / peak - 1.0) * 100.0, 0.0)
    longest, last_peak = 0.0, times[0]
    for i in range(n):
        if dd[i] >= 0:
            if i > 0 and dd[i - 1] < 0:
                longest = max(longest, float(times[i] - last_peak))
            last_peak = times[i]
    if dd[-1] < 0:
        longest = max(longest, float(times[-1] - last_peak))
    assert stats["max_drawdown_pct"] == dd.min()
    assert stats["max_drawdown_duration_days"] == longest / 86400
