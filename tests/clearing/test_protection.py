"""Protective orders: a stop-loss, take-profit or trailing stop attached to an entry goes live as
it fills (partial fills grow it), the two cancel each other, and they go when the position is
closed another way; OCO pairs; all of it the same in backtests, on the paper broker and after a
restart from the ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import Strategy
from engine.backtests.replay import run_backtest
from engine.clearing.account import Account
from engine.clearing.broker import PaperBroker, open_account
from engine.clearing.config import BrokerConfig, RiskLimits
from engine.clock import ReplayClock
from engine.dtypes import ohlc_dtype
from engine.orders import OrderCancelled, OrderFilled, OrderRejected, SubmitOrder

T0 = 1_700_000_000 - 1_700_000_000 % 60


def bars(rows):
    out = np.zeros(len(rows), dtype=ohlc_dtype)
    for i, (o, h, lo, c) in enumerate(rows):
        out[i] = (0, T0 + 60 * i, o, h, lo, c, 1.0, 1, (o + h + lo + c) / 4)
    return out


class Entry(Strategy):
    """At bar `at`, buys (or sells) `size` with the given protection; `then` runs later."""

    at: int = 1
    size: float = 10
    side: str = "buy"
    protect: dict = {}
    then: dict = {}

    def on_start(self):
        self.events = []

    def on_bar(self, symbol):
        n = len(self.ctx.ohlcv(symbol))
        if n == self.at:
            getattr(self.ctx, self.side)(symbol, self.size, **self.protect)
        for method, args in self.then.get(n, []):
            getattr(self.ctx, method)(*args)

    def on_fill(self, fill):
        self.events.append(("fill", fill.client_id, fill.side, fill.size, fill.price))

    def on_order(self, event):
        if isinstance(event, OrderCancelled):
            self.events.append(("cancel", event.client_id, event.reason))


def replay(rows, **params):
    strat = Entry(**params)
    result = run_backtest(strat, {"x": bars(rows)})
    return strat.events, result


def test_a_stop_loss_in_percent_fills_where_the_path_crosses_it_and_takes_the_target_with_it():
    events, result = replay([(100, 100, 100, 100), (100, 101, 99, 100), (99, 99, 90, 92)],
                            protect={"stop_loss": "5%", "take_profit": "10%"})
    fills = [e for e in events if e[0] == "fill"]
    assert fills[0] == ("fill", "o1", "buy", 10, 100.0)  # at bar 1's open
    assert fills[1] == ("fill", "o1.sl", "sell", 10, pytest.approx(95.0))
    assert ("cancel", "o1.tp") == events[-1][:2]
    assert result.stats["final_equity"] == pytest.approx(100_000 - 50.0)


def test_the_take_profit_wins_when_the_path_reaches_it_first():
    # Bar 2 opens at 104 and goes to its high first (nearer), 111, then its low, 94.
    events, _ = replay([(100, 100, 100, 100), (100, 101, 99, 100), (104, 111, 94, 95)],
                       protect={"stop_loss": 95.0, "take_profit": 110.0})
    fills = [e for e in events if e[0] == "fill"]
    assert fills[1] == ("fill", "o1.tp", "sell", 10, 110.0)
    assert any(e[:2] == ("cancel", "o1.sl") for e in events)


def test_a_gap_through_the_stop_fills_at_the_open():
    events, _ = replay([(100, 100, 100, 100), (100, 101, 99, 100), (90, 91, 88, 89)],
                       protect={"stop_loss": 95.0})
    assert [e for e in events if e[0] == "fill"][1][4] == 90.0


def test_a_trailing_stop_ratchets_along_the_path_and_never_back():
    rows = [(100, 100, 100, 100), (100, 100, 100, 100), (100, 120, 100, 118),
            (118, 119, 112, 115), (115, 116, 100, 101)]
    events, _ = replay(rows, protect={"trail": "10%"})
    fills = [e for e in events if e[0] == "fill"]
    # The high of 120 takes the stop to 108; 112 stays above it; the fall to 100 triggers it.
    assert fills[1] == ("fill", "o1.sl", "sell", 10, pytest.approx(108.0))


def test_a_short_entry_protects_from_above():
    events, _ = replay([(100, 100, 100, 100), (100, 101, 99, 100), (101, 106, 100, 105)],
                       side="sell", protect={"stop_loss": "5%"})
    assert [e for e in events if e[0] == "fill"][1] == ("fill", "o1.sl", "buy", 10,
                                                         pytest.approx(105.0))


def test_protection_is_cancelled_when_the_position_is_closed_another_way():
    events, result = replay([(100, 100, 100, 100)] * 2 + [(100, 101, 99, 100)] * 3,
                            protect={"stop_loss": 90.0, "take_profit": 120.0},
                            then={3: [("close", ("x",))]})
    cancels = {e[1]: e[2] for e in events if e[0] == "cancel"}
    assert cancels == {"o1.sl": "protection: the position is flat",
                       "o1.tp": "protection: the position is flat"}
    assert result.stats["final_equity"] == pytest.approx(100_000)


def test_a_target_does_not_count_protective_orders_as_working():
    class Targets(Entry):
        def on_bar(self, symbol):
            n = len(self.ctx.ohlcv(symbol))
            if n in (1, 3):
                self.ctx.target(symbol, 10, stop_loss="5%")

    strat = Targets()
    result = run_backtest(strat, {"x": bars([(100, 100, 100, 100)] * 5)})
    assert [(f.side, f.size) for f in result.fills] == [("buy", 10)]


@pytest.mark.parametrize(("kw", "message"), [
    ({"stop_loss": 105.0}, "stop_loss=105 is on the wrong side of 100"),
    ({"take_profit": 95.0}, "take_profit=95 is on the wrong side of 100"),
    ({"stop_loss": "five"}, "give a price, or a percent"),
    ({"trail": "150%"}, "a percent between 0 and 100"),
    ({"stop_loss": 90.0, "trail": "5%"}, "one protective stop per order"),
])
def test_bad_protection_is_refused_before_anything_is_sent(kw, message):
    seen = {}

    class Bad(Strategy):
        def on_bar(self, symbol):
            if "err" not in seen:
                try:
                    self.ctx.buy(symbol, 1, **kw)
                except ValueError as exc:
                    seen["err"] = str(exc)

    result = run_backtest(Bad(), {"x": bars([(100, 100, 100, 100)] * 3)})
    assert message in seen["err"]
    assert len(result.fills) == 0


def test_the_broker_rejects_a_wrong_side_stop_it_is_sent_directly():
    account = Account("a", ["x"], cash=1_000, config=BrokerConfig(risk=RiskLimits(leverage=None)))
    broker = PaperBroker(account, ReplayClock(0.0))
    heard = []
    broker.attach(None, heard.extend)
    broker.on_batch([{"symbol": "x", "bid": 99.0, "ask": 101.0, "time": 0.0}], [], [])
    broker.submit(SubmitOrder(symbol="x", side="buy", size=1, stop_loss=102.0))
    assert isinstance(heard[-1], OrderRejected)
    assert "stop-loss 102 is on the wrong side of the price 101" in heard[-1].reason


def _quote(broker, bid, ask, t, size=math.nan):
    broker.on_batch([{"symbol": "x", "bid": bid, "ask": ask, "time": t,
                      "ticks": [{"type": "bid", "price": bid, "size": size},
                                {"type": "ask", "price": ask, "size": size}]}], [], [])


def test_partial_fills_grow_the_protection_and_a_restart_keeps_it(tmp_path):
    clock = ReplayClock(0.0)
    config = BrokerConfig(risk=RiskLimits(leverage=None), stop_trigger="bidask")
    broker = open_account("p", ["x"], cash=10_000, config=config, path=tmp_path, clock=clock)
    _quote(broker, 99.0, 100.0, 0.0, size=3.0)
    broker.submit(SubmitOrder(client_id="e", symbol="x", side="buy", size=10,
                              order_type="limit", limit_price=100.0, stop_loss_pct=0.05,
                              take_profit=120.0))
    children = {o.client_id: o for o in broker.account.open_orders()}
    assert children["e.sl"].remaining == 3
    assert children["e.tp"].remaining == 3
    assert children["e.sl"].stop_price == pytest.approx(95.0)
    broker.ledger.close()
    # A restart rebuilds the entry, its fills and the children from the ledger.
    again = open_account("p", ["x"], config=config, path=tmp_path, clock=clock)
    rebuilt = {o.client_id: (o.remaining, o.stop_price, o.limit_price)
               for o in again.account.open_orders()}
    assert rebuilt == {"e": (7, None, 100.0), "e.sl": (3, pytest.approx(95.0), None),
                       "e.tp": (3, None, 120.0)}
    heard = []
    again.attach(None, heard.extend)
    _quote(again, 99.0, 100.0, 1.0, size=7.0)  # the rest of the entry fills at 100
    assert {o.client_id: o.remaining for o in again.account.open_orders()} == {
        "e.sl": 10, "e.tp": 10}
    _quote(again, 94.0, 94.5, 2.0)  # the bid crosses the stop: all 10 go
    fills = [(e.client_id, e.size, e.price) for e in heard if isinstance(e, OrderFilled)]
    assert fills == [("e", 7.0, 100.0), ("e.sl", 10.0, 94.0)]
    cancels = [(e.client_id, e.reason) for e in heard if isinstance(e, OrderCancelled)]
    assert cancels[0][0] == "e.tp"
    assert again.account.position("x") == 0
    again.ledger.close()


def test_one_cancels_the_other_links_any_two_working_orders():
    class Pair(Strategy):
        def on_bar(self, symbol):
            if len(self.ctx.ohlcv(symbol)) == 1:
                a = self.ctx.buy(symbol, 1, limit=95.0)
                b = self.ctx.buy(symbol, 1, limit=90.0)
                self.ctx.oco(a, b)

    result = run_backtest(Pair(), {"x": bars([(100, 100, 100, 100), (100, 100, 94, 96),
                                               (96, 96, 89, 90)])})
    assert [(f.client_id, f.price) for f in result.fills] == [("o1", 95.0)]
