"""The account from a strategy's side: cash, equity, buying power, holdings and working orders
read through the Context, orders sized by value, fraction and weights, and bar dates; the same
calls in a backtest and on a paper broker."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest

from engine import Strategy
from engine.account_view import NoAccountError
from engine.backtests.replay import run_backtest
from engine.dtypes import ohlc_dtype

DAY = 86400
T0 = 1_700_006_400 - 1_700_006_400 % DAY  # a midnight


def daily(closes, start=T0):
    bars = np.zeros(len(closes), dtype=ohlc_dtype)
    for i, c in enumerate(closes):
        bars[i] = (0, start + DAY * i, c, c * 1.01, c * 0.99, c, 1.0, 1, c)
    return bars


class Probe(Strategy):
    """Runs `script(ctx, n)` at every bar of the first symbol and keeps what it returns."""

    script: object = None

    def on_start(self):
        self.out = []

    def on_bar(self, symbol):
        if symbol == self.ctx.symbols[-1]:
            self.out.append(self.script(self.ctx, len(self.ctx.ohlcv(symbol))))


def probe(script, data, **kw):
    strat = Probe(script=script)
    result = run_backtest(strat, data, **kw)
    return strat.out, result


def test_cash_equity_holdings_and_orders_follow_the_fills():
    closes = [100.0, 110.0, 120.0, 90.0]

    def script(ctx, n):
        if n == 1:
            ctx.buy("x", 10)
            ctx.buy("x", 5, limit=50.0)  # stays working
        h = ctx.holding("x")
        return (ctx.cash, ctx.equity, h.size, h.avg_price, h.unrealized_pnl,
                [(o.side, o.remaining, o.limit_price) for o in ctx.orders("x")],
                ctx.orders("y"))

    out, _ = probe(script, {"x": daily(closes)}, cash=10_000)
    # Bought 10 at bar 2's open (110); marked at each close.
    cash, equity, size, avg, upnl, working, none = out[2]
    assert (cash, size, avg) == (10_000 - 1100, 10, 110)
    assert equity == pytest.approx(cash + 10 * 120)
    assert upnl == pytest.approx(10 * (120 - 110))
    assert working == [("buy", 5, 50.0)]
    assert none == []
    assert out[0][0] == 10_000
    assert out[0][2] == 0


def test_buying_power_is_what_the_leverage_cap_leaves():
    def script(ctx, n):
        if n == 1:
            ctx.buy("x", 10)
        return ctx.buying_power, ctx.equity, abs(ctx.holding("x").value)

    out, _ = probe(script, {"x": daily([100.0, 100.0, 100.0])}, cash=5_000, leverage=2)
    power, equity, exposure = out[-1]
    assert power == pytest.approx(2 * equity - exposure)
    uncapped, _ = probe(lambda ctx, n: ctx.buying_power, {"x": daily([100.0])}, cash=5_000)
    assert uncapped == [math.inf]


def test_target_percent_sizes_from_the_latest_close_in_whole_lots():
    closes = [100.0, 103.0, 103.0]

    def script(ctx, n):
        if n == 1:
            return ctx.target_percent("x", 0.95)
        return None

    strat = Probe(script=script)
    result = run_backtest(strat, {"x": daily(closes)}, cash=10_000)
    assert result.fills[0].size == math.trunc(0.95 * 10_000 / 100.0)  # 95 shares
    # A lot of 10 shares: 90.
    Probe.lot_sizes = {"x": 10}
    try:
        result = run_backtest(Probe(script=script), {"x": daily(closes)}, cash=10_000)
    finally:
        Probe.lot_sizes = {}
    assert result.fills[0].size == 90


def test_target_value_counts_working_orders_and_goes_short():
    def script(ctx, n):
        if n == 1:
            first = ctx.target_value("x", 1_000)  # 10 at 100
            again = ctx.target_value("x", 1_000)  # already on its way: nothing to do
            return first is not None, again
        if n == 2:
            ctx.target_value("x", -500)  # from +10 to -5: one sell of 15
        return None

    strat = Probe(script=script)
    result = run_backtest(strat, {"x": daily([100.0, 100.0, 100.0, 100.0])}, cash=10_000)
    assert strat.out[0] == (True, None)
    assert [(f.side, f.size) for f in result.fills] == [("buy", 10), ("sell", 15)]


def test_rebalance_sells_before_it_buys_and_flattens_what_it_leaves_out():
    data = {"a": daily([100.0] * 4), "b": daily([50.0] * 4), "c": daily([20.0] * 4)}
    weights = {1: {"a": 0.5, "b": 0.3}, 2: {"b": 0.2, "c": 0.7}}

    def script(ctx, n):
        if n in weights:
            return ctx.rebalance(weights[n])
        return None

    strat = Probe(script=script)
    result = run_backtest(strat, data, cash=10_000, leverage=1)
    second = [f for f in result.fills if f.time >= T0 + 2 * DAY]
    # "a" goes flat and "b" shrinks before "c" grows: the sells come first.
    assert [(f.symbol, f.side) for f in second] == [("a", "sell"), ("b", "sell"), ("c", "buy")]
    assert not result.rejected
    assert {f.symbol: f.size for f in result.fills if f.time < T0 + 2 * DAY} == {"a": 50,
                                                                                   "b": 60}


@pytest.mark.parametrize(("call", "message"), [
    (lambda ctx: ctx.rebalance({"zzz": 0.5}), "'zzz' not traded by this run"),
    (lambda ctx: ctx.rebalance({"x": 0.8, "y": 0.5}), "adds up to 1.3 of equity, beyond"),
    (lambda ctx: ctx.target_percent("x", 1.5), "beyond the account's leverage of 1"),
    (lambda ctx: ctx.target_percent("x", math.nan), "must be finite"),
    (lambda ctx: ctx.target_value("q", 10.0), "which this run does not trade"),
])
def test_bad_sizing_is_refused_and_sends_nothing(call, message):
    seen = {}

    def script(ctx, n):
        if n == 1:
            with pytest.raises(ValueError, match=message):
                call(ctx)
            seen["orders"] = ctx.orders()
        return None

    data = {"x": daily([100.0, 100.0]), "y": daily([10.0, 10.0])}
    _, result = probe(script, data, cash=10_000, leverage=1)
    assert seen["orders"] == []
    assert len(result.fills) == 0


def test_bar_dates_make_the_first_trading_day_of_a_month_one_line():
    start = int(datetime.datetime(2024, 1, 29, tzinfo=datetime.UTC).timestamp())
    times = [start + DAY * i for i in range(10)]

    def script(ctx, n):
        first = n > 1 and ctx.bar_date("x").month != ctx.bar_date("x", 1).month
        return ctx.bar_time("x"), ctx.bar_date("x"), first

    out, _ = probe(script, {"x": daily([10.0] * 10, start=times[0])})
    assert [t for t, _, _ in out] == times
    assert out[0][1] == datetime.date(2024, 1, 29)
    assert [d for _, d, first in out if first] == [datetime.date(2024, 2, 1)]


def test_a_run_without_a_broker_has_no_account_to_read():
    from engine.clock import ReplayClock
    from engine.strategy import Context, IntentLog

    ctx = Context(symbols=["x"], timeframe=60, bars={}, quotes={}, clock=ReplayClock(0.0),
                  router=IntentLog())
    with pytest.raises(NoAccountError, match="use --paper|run with --paper"):
        _ = ctx.equity
