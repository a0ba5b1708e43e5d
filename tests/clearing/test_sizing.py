"""Orders sized as a fraction of the equity available, resolved at the fill (backtesting.py's
`buy(size=0.95)`), and the instruments' rules (lot, tick, minimum notional): the clearing core
and the paper broker, the same in backtests, on a paper account and after a restart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import Strategy
from engine.backtests.replay import BacktestError, run_backtest
from engine.clearing.broker import open_account
from engine.clearing.config import BrokerConfig, Fees, RiskLimits
from engine.clearing.ledger import read_events
from engine.clock import ReplayClock
from engine.dtypes import ohlc_dtype
from engine.orders import (
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    SubmitOrder,
)

T0 = 1_700_000_000 - 1_700_000_000 % 60
FEE = 0.001


def bars(rows):
    out = np.zeros(len(rows), dtype=ohlc_dtype)
    for i, (o, h, lo, c) in enumerate(rows):
        out[i] = (0, T0 + 60 * i, o, h, lo, c, 1.0, 1, (o + h + lo + c) / 4)
    return out


def flat(prices):
    return bars([(p, p, p, p) for p in prices])


class Script(Strategy):
    """Runs `plan[n]` (a list of (method, args, kwargs)) when bar n closes; keeps what it
    hears."""

    plan: dict = {}

    def on_start(self):
        self.heard = []

    def on_bar(self, symbol):
        if symbol != self.ctx.symbols[-1]:
            return  # once a step, when its last symbol's bar closed
        n = len(self.ctx.ohlcv(symbol))
        for method, args, kw in self.plan.get(n, []):
            getattr(self.ctx, method)(*args, **kw)

    def on_fill(self, fill):
        self.heard.append(("fill", fill.client_id, fill.side, fill.size, fill.price))

    def on_order_rejected(self, event):
        self.heard.append(("rejected", event.client_id, event.reason))

    def on_order(self, event):
        if isinstance(event, OrderCancelled):
            self.heard.append(("cancelled", event.client_id, event.reason))


def run(plan, data, **options):
    strat = Script(plan=plan)
    result = run_backtest(strat, data, **options)
    return strat.heard, result


def whole_units(budget, price, fee_rate, lot=1.0):
    """The reference: the most whole lots whose cost with the fee fits in `budget`."""
    n = math.floor(budget / (price * (1 + fee_rate)) / lot)
    while (n + 1) * lot * price * (1 + fee_rate) <= budget:
        n += 1
    while n and n * lot * price * (1 + fee_rate) > budget:
        n -= 1
    return n * lot


# -- resolution at the fill -------------------------------------------------------------------


def test_a_fraction_resolves_at_the_fill_price_with_the_commission_in_whole_units():
    # Placed at the close of 100; filled at the next open, 103.
    heard, result = run({1: [("buy", ("x", "95%"), {})]}, {"x": flat([100.0, 103.0, 103.0])},
                        cash=10_000, commission=FEE)
    (fill,) = result.fills
    assert fill.price == 103.0
    assert fill.size == whole_units(0.95 * 10_000, 103.0, FEE) == 92
    assert fill.fee == pytest.approx(92 * 103.0 * FEE)


def test_a_short_is_sized_the_same_way():
    _, result = run({1: [("sell", ("x", "50%"), {})]}, {"x": flat([100.0, 80.0, 80.0])},
                    cash=10_000, commission=FEE)
    (fill,) = result.fills
    assert (fill.side, fill.size) == ("sell", whole_units(5_000, 80.0, FEE))


def test_margin_available_leaves_out_what_open_positions_use():
    # 40 of y at 100 use 4,000 of 10,000 equity: 50 % of the 6,000 left buys x at 50.
    data = {"y": flat([100.0, 100.0, 100.0, 100.0]), "x": flat([50.0, 50.0, 50.0, 50.0])}
    plan = {1: [("buy", ("y", 40), {})], 2: [("buy", ("x", "50%"), {})]}
    _, result = run(plan, data, cash=10_000, leverage=1)
    x = [f for f in result.fills if f.symbol == "x"]
    assert x[0].size == whole_units(0.5 * (10_000 - 4_000), 50.0, 0.0) == 60


def test_under_leverage_the_fraction_runs_to_the_leverage():
    # At 2x, "150%" of 10,000 available is 15,000 of exposure: 150 at 100.
    _, result = run({1: [("buy", ("x", "150%"), {})]}, {"x": flat([100.0] * 3)},
                    cash=10_000, leverage=2)
    assert result.fills[0].size == 150
    # With positions open, margin available is equity less exposure / leverage.
    plan = {1: [("buy", ("x", 100), {})], 2: [("buy", ("x", "100%"), {})]}
    _, result = run(plan, {"x": flat([100.0] * 4)}, cash=10_000, leverage=2)
    assert [f.size for f in result.fills] == [100, whole_units(10_000 - 10_000 / 2, 100.0, 0)]


def test_a_fraction_that_buys_no_whole_lot_is_cancelled_with_the_reason():
    heard, result = run({1: [("buy", ("x", "1%"), {})]}, {"x": flat([500.0, 500.0, 500.0])},
                        cash=10_000)
    assert result.fills == []
    (cancel,) = [h for h in heard if h[0] == "cancelled"]
    assert "sized as a fraction of equity (1% of 10,000.00 available)" in cancel[2]
    assert "less than one lot of 1 x at 500" in cancel[2]
    # Listed with the orders the account refused, as backtesting.py's broker cancels it.
    assert [r.client_id for r in result.rejected] == ["o1"]


@pytest.mark.parametrize(("size", "message"), [
    ("150%", "beyond the account's leverage of 1"),
    ("0%", "a percent of equity above 0"),
    ("-5%", "a percent of equity above 0"),
    ("half", "give units, or a percent of equity like '95%'"),
    ("x%", "not a percent"),
])
def test_a_bad_fraction_is_refused_before_anything_is_sent(size, message):
    with pytest.raises(BacktestError, match="raised") as info:
        run({1: [("buy", ("x", size), {})]}, {"x": flat([100.0] * 3)}, cash=10_000, leverage=1)
    assert message in str(info.value)
    assert "ValueError" in str(info.value)


def test_the_broker_refuses_a_fraction_beyond_its_leverage_sent_directly():
    broker = open_account("p", ["x"], cash=10_000, config=BrokerConfig(), clock=ReplayClock(0),
                          durable=False)
    heard = []
    broker.attach(None, heard.extend)
    broker.submit(SubmitOrder(symbol="x", side="buy", equity_fraction=1.5))
    assert isinstance(heard[0], OrderRejected)
    assert heard[0].reason == "sized as 150% of equity, beyond the account's leverage of 1"


def test_protection_is_sized_by_what_the_entry_filled():
    # 95 % at 100 with the fee: 94; the stop at 5 % under the fill takes all 94 out.
    rows = [(100, 100, 100, 100), (100, 101, 99, 100), (100, 100, 90, 92), (92, 92, 92, 92)]
    heard, result = run({1: [("buy", ("x", "95%"), {"stop_loss": "5%", "take_profit": "10%"})]},
                        {"x": bars(rows)}, cash=10_000, commission=FEE)
    fills = [h for h in heard if h[0] == "fill"]
    n = whole_units(9_500, 100.0, FEE)
    assert fills == [("fill", "o1", "buy", n, 100.0), ("fill", "o1.sl", "sell", n, 95.0)]
    assert any(h[:2] == ("cancelled", "o1.tp") for h in heard)
    assert result.stats["final_equity"] == pytest.approx(
        10_000 - n * 100 * FEE - n * 5.0 - n * 95 * FEE)


# -- instruments ------------------------------------------------------------------------------


def test_sizes_the_engine_computes_round_down_to_the_lot():
    _, result = run({1: [("target_percent", ("x", 0.95), {})]}, {"x": flat([100.0] * 3)},
                    cash=10_000, instruments={"x": {"lot_size": 10}})
    assert result.fills[0].size == 90
    _, result = run({1: [("buy", ("x", "95%"), {})]}, {"x": flat([100.0] * 3)},
                    cash=10_000, commission=FEE, instruments={"*": {"lot_size": 0.25}})
    assert result.fills[0].size == whole_units(9_500, 100.0, FEE, lot=0.25) == 94.75


def test_an_explicit_size_off_the_lot_is_rejected_and_nothing_is_sent():
    heard, result = run({1: [("buy", ("x", 15), {})]}, {"x": flat([100.0] * 3)},
                        instruments={"x": {"lot_size": 10}})
    assert result.fills == []
    assert heard == [("rejected", "o1", "size 15 is not a multiple of x's lot size 10 "
                                        "(a lot-size violation: nothing was sent)")]
    # On the lot it goes through; fractional lots too.
    _, result = run({1: [("buy", ("x", 0.003), {})]}, {"x": flat([100.0] * 3)},
                    instruments={"x": {"lot_size": 0.001}})
    assert result.fills[0].size == 0.003


def test_the_strategy_s_lot_sizes_are_the_instrument_s_where_the_run_sets_none():
    class Lots(Script):
        lot_sizes = {"x": 5}

    strat = Lots(plan={1: [("buy", ("x", 7), {}), ("target_value", ("x", 1_240), {})]})
    result = run_backtest(strat, {"x": flat([100.0] * 3)})
    assert strat.heard[0] == ("rejected", "o1", "size 7 is not a multiple of x's lot size 5 "
                                               "(a lot-size violation: nothing was sent)")
    assert result.fills[0].size == 10
    # The run's instrument wins over the strategy's.
    strat = Lots(plan={1: [("buy", ("x", 7), {})]})
    result = run_backtest(strat, {"x": flat([100.0] * 3)}, instruments={"x": {"lot_size": 1}})
    assert result.fills[0].size == 7


def test_prices_off_the_tick_are_rejected():
    heard, _ = run({1: [("buy", ("x", 1), {"limit": 99.97}),
                        ("sell", ("x", 1), {"stop": 98.0, "limit": 97.93}),
                        ("buy", ("x", 1), {"stop_loss": 90.01})]},
                   {"x": flat([100.0] * 3)}, instruments={"x": {"tick_size": 0.05}})
    reasons = [h[2] for h in heard if h[0] == "rejected"]
    assert reasons == ["limit price 99.97 is not a multiple of x's tick size 0.05",
                       "limit price 97.93 is not a multiple of x's tick size 0.05",
                       "stop-loss price 90.01 is not a multiple of x's tick size 0.05"]


def test_prices_the_engine_computes_round_to_the_tick_away_from_the_market():
    # Entry fills at 101.3: a 5 % stop (96.235) goes down to 96.0, a 10 % target (111.43)
    # up to 111.5, with a tick of 0.5.
    broker = open_account("p", ["x"], cash=10_000, clock=ReplayClock(0), durable=False,
                          config=BrokerConfig(risk=RiskLimits(leverage=None)),
                          instruments={"x": {"tick_size": 0.5}})
    broker.on_batch([{"symbol": "x", "bid": 101.0, "ask": 101.3, "time": 0.0}], [], [])
    broker.submit(SubmitOrder(client_id="e", symbol="x", side="buy", size=2,
                              stop_loss_pct=0.05, take_profit_pct=0.10))
    prices = {o.client_id: (o.stop_price, o.limit_price) for o in broker.account.open_orders()}
    assert prices == {"e.sl": (96.0, None), "e.tp": (None, 111.5)}
    # A short's: the stop above rounds up, the target below down.
    broker.submit(SubmitOrder(client_id="s", symbol="x", side="sell", size=4,
                              stop_loss_pct=0.05, take_profit_pct=0.10))
    prices = {o.client_id: (o.stop_price, o.limit_price) for o in broker.account.open_orders()}
    assert prices["s.sl"] == (106.5, None)  # 101 x 1.05 = 106.05
    assert prices["s.tp"] == (None, 90.5)  # 101 x 0.90 = 90.9


def test_an_order_below_the_minimum_notional_is_rejected_with_the_reason():
    heard, result = run({1: [("buy", ("x", 3), {}), ("buy", ("x", 6), {})]},
                        {"x": flat([100.0] * 3)}, instruments={"x": {"min_notional": 500}})
    assert heard[0] == ("rejected", "o1", "notional 300.00 (3 x at 100) is below x's minimum "
                                          "of 500.00")
    assert [f.size for f in result.fills] == [6]


def test_a_fraction_below_the_minimum_notional_is_cancelled_at_the_fill():
    heard, result = run({1: [("buy", ("x", "4%"), {})]}, {"x": flat([100.0] * 3)},
                        cash=10_000, instruments={"x": {"min_notional": 500}})
    assert result.fills == []
    (cancel,) = [h for h in heard if h[0] == "cancelled"]
    assert cancel[2] == ("sized as a fraction of equity (4% of 10,000.00 available): notional "
                         "400.00 (4 x at 100) is below x's minimum of 500.00")


# -- the paper account and its ledger --------------------------------------------------------


def _quote(broker, bid, ask, t):
    broker.on_batch([{"symbol": "x", "bid": bid, "ask": ask, "time": t}], [], [])


def _paper(path, clock):
    return open_account("p", ["x"], cash=10_000, clock=clock, path=path,
                        config=BrokerConfig(fees=Fees(taker_pct=FEE, maker_pct=FEE),
                                            stop_trigger="bidask"),
                        instruments={"x": {"lot_size": 1, "tick_size": 0.01}})


def _script(broker, restart_at, path, clock):
    """A fraction-sized limit entry with protection that waits, fills, and stops out; the
    paper account is restarted from its ledger after step `restart_at`. Returns the fills
    heard and the account's final state."""
    heard = []
    broker.attach(None, heard.extend)
    steps = [
        lambda b: _quote(b, 100.0, 100.5, 0.0),
        lambda b: b.submit(SubmitOrder(client_id="e", symbol="x", side="buy",
                                       equity_fraction=0.95, order_type="limit",
                                       limit_price=99.0, stop_loss_pct=0.05,
                                       take_profit=120.0)),
        lambda b: _quote(b, 99.5, 100.0, 1.0),  # not there yet
        lambda b: _quote(b, 98.5, 98.9, 2.0),  # fills at 98.9
        lambda b: _quote(b, 97.0, 97.5, 3.0),
        lambda b: _quote(b, 93.0, 93.5, 4.0),  # the stop (98.9 x 0.95 = 93.955 -> 93.95) fires
    ]
    for i, step in enumerate(steps):
        step(broker)
        if i == restart_at:
            broker.ledger.close()
            broker = _paper(path, clock)
            broker.attach(None, heard.extend)
    fills = [(e.client_id, e.side, e.size, e.price) for e in heard if isinstance(e, OrderFilled)]
    state = (broker.account.cash, broker.account.position("x"), broker.account.open_orders())
    broker.ledger.close()
    return fills, state


@pytest.mark.parametrize("restart_at", [1, 2, 3, 4])
def test_a_restart_from_the_ledger_keeps_fraction_sized_orders_working(tmp_path, restart_at):
    clock = ReplayClock(0.0)
    straight = _script(_paper(tmp_path / "a", clock), 99, tmp_path / "a", clock)
    n = whole_units(9_500, 98.9, FEE)
    assert straight[0] == [("e", "buy", n, 98.9), ("e.sl", "sell", n, 93.0)]
    restarted = _script(_paper(tmp_path / "b", clock), restart_at, tmp_path / "b", clock)
    assert restarted == straight
    # The ledger holds the fraction, and the size only through the fills.
    events = [e for _, e in read_events(tmp_path / "b")]
    accepted = [e.order for e in events if isinstance(e, OrderAccepted)]
    assert (accepted[0].size, accepted[0].equity_fraction) == (None, 0.95)


def test_a_restart_rebuilds_a_partly_filled_fraction_order_and_its_protection(tmp_path):
    clock = ReplayClock(0.0)
    broker = _paper(tmp_path, clock)
    _quote(broker, 100.0, 100.5, 0.0)
    broker.submit(SubmitOrder(client_id="e", symbol="x", side="buy", equity_fraction=0.5,
                              order_type="limit", limit_price=100.0, stop_loss_pct=0.05))
    # 30 of the 49 it resolves to are on offer at 100.
    broker.on_batch([{"symbol": "x", "time": 1.0, "ticks": [
        {"type": "bid", "price": 99.0, "size": 30.0}, {"type": "ask", "price": 100.0,
                                                        "size": 30.0}]}], [], [])
    before = {o.client_id: (o.size, o.remaining) for o in broker.account.open_orders()}
    assert before == {"e": (whole_units(5_000, 100.0, FEE), 19), "e.sl": (30, 30)}
    broker.ledger.close()
    again = _paper(tmp_path, clock)
    assert {o.client_id: (o.size, o.remaining) for o in again.account.open_orders()} == before
    again.ledger.close()
