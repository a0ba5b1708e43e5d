"""The clearing core against scripted quotes: every order type, TIF, fee, slippage and flip,
checked against hand-computed cash and positions."""

from __future__ import annotations

import math

import pytest

from engine.clearing.account import Account
from engine.clearing.config import BrokerConfig, Fees, RiskLimits, Slippage
from engine.instruments import Instrument
from engine.orders import ModifyOrder, OrderCancelled, OrderFilled, OrderTriggered, SubmitOrder

T = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def account(cash=100_000.0, **config) -> Account:
    return Account("test", ["x"], cash=cash, config=BrokerConfig(**config), instruments={"x": Instrument(symbol="x", tick_size=0.5)})


def order(side="buy", size=10.0, **kw) -> SubmitOrder:
    return SubmitOrder(symbol="x", side=side, size=size, **kw)


def fills(events):
    return [(e.side, e.size, e.price, e.liquidity, e.remaining) for e in events
            if isinstance(e, OrderFilled)]


def test_market_orders_take_the_opposite_side_not_last():
    a = account()
    a.accept(order("buy", 10), T)
    assert fills(a.match("x", T, bid=99.0, ask=101.0, trade=100.0)) == [
        ("buy", 10.0, 101.0, "taker", 0.0)]
    a.accept(order("sell", 4), T)
    assert fills(a.match("x", T + 1, bid=102.0, ask=103.0)) == [("sell", 4.0, 102.0, "taker", 0.0)]
    assert a.position("x") == 6.0
    assert a.cash == 100_000 - 1010 + 408
    assert a.realized == 4 * (102 - 101)


def test_limits_fill_when_the_opposite_side_reaches_them_at_the_better_price():
    a = account()
    a.accept(order("buy", 5, order_type="limit", limit_price=100.0), T)
    assert fills(a.match("x", T, bid=100.0, ask=100.5)) == []  # ask above the limit: rests
    # The ask drops through the limit: the buyer gets the better price, as a resting maker.
    assert fills(a.match("x", T + 1, bid=98.0, ask=99.0)) == [("buy", 5.0, 99.0, "maker", 0.0)]
    # A marketable limit on arrival is a taker at the quote.
    a.accept(order("sell", 5, order_type="limit", limit_price=97.0), T + 2)
    assert fills(a.match("x", T + 2, bid=98.0, ask=99.0)) == [("sell", 5.0, 98.0, "taker", 0.0)]


def test_displayed_size_caps_fills_and_the_rest_keeps_working():
    a = account()
    a.accept(order("buy", 10), T)
    assert fills(a.match("x", T, bid=99.0, ask=100.0, ask_size=3.0)) == [
        ("buy", 3.0, 100.0, "taker", 7.0)]
    assert fills(a.match("x", T + 1, bid=99.0, ask=100.5, ask_size=4.0)) == [
        ("buy", 4.0, 100.5, "taker", 3.0)]
    assert a.position("x") == 7.0


def test_market_orders_stay_takers_when_partially_filled_over_quotes():
    a = account()
    a.accept(order("buy", 10), T)
    a.match("x", T, bid=99.0, ask=100.0, ask_size=3.0)
    assert fills(a.match("x", T + 1, bid=99.0, ask=100.5, ask_size=20.0)) == [
        ("buy", 7.0, 100.5, "taker", 0.0)]


def test_two_orders_share_the_displayed_size():
    a = account()
    a.accept(order("buy", 3), T)
    a.accept(order("buy", 3), T)
    assert [f[1] for f in fills(a.match("x", T, bid=99.0, ask=100.0, ask_size=4.0))] == [3.0, 1.0]


def test_partial_fills_off_means_unlimited_liquidity():
    a = account(partial_fills=False)
    a.accept(order("buy", 10), T)
    assert fills(a.match("x", T, bid=99.0, ask=100.0, ask_size=1.0)) == [
        ("buy", 10.0, 100.0, "taker", 0.0)]


@pytest.mark.parametrize(("mode", "quote", "triggers"), [
    ("trade", {"bid": 104.0, "ask": 106.0, "trade": 104.9}, False),
    ("trade", {"bid": 104.0, "ask": 106.0, "trade": 105.0}, True),
    ("mid", {"bid": 104.0, "ask": 105.0}, False),
    ("mid", {"bid": 104.5, "ask": 105.5}, True),
    ("bidask", {"bid": 104.0, "ask": 105.0}, True),   # a buy stop watches the ask
    ("bidask", {"bid": 104.0, "ask": 104.9}, False),
])
def test_buy_stops_trigger_on_the_configured_price(mode, quote, triggers):
    a = account(stop_trigger=mode)
    a.accept(order("buy", 2, order_type="stop", stop_price=105.0), T)
    events = a.match("x", T, **quote)
    assert any(isinstance(e, OrderTriggered) for e in events) == triggers
    if triggers:  # it becomes a market order: fills at the ask
        assert fills(events) == [("buy", 2.0, quote["ask"], "taker", 0.0)]


def test_a_stop_limit_becomes_a_limit_after_triggering():
    a = account()
    a.accept(order("sell", 3, order_type="stop_limit", stop_price=95.0, limit_price=94.0), T)
    events = a.match("x", T, bid=93.0, ask=93.5, trade=94.5)  # triggered, but bid below limit
    assert [type(e).__name__ for e in events] == ["OrderTriggered"]
    # It met the book once as a limit and rested: its later fill is a maker's.
    assert fills(a.match("x", T + 1, bid=94.2, ask=94.6)) == [("sell", 3.0, 94.2, "maker", 0.0)]


def test_fees_per_unit_percent_and_fixed_once_per_order():
    a = account(fees=Fees(per_unit=0.01, taker_pct=0.001, maker_pct=0.0002, fixed=1.0))
    a.accept(order("buy", 10), T)
    ev = a.match("x", T, bid=99.0, ask=100.0, ask_size=4.0)
    ev += a.match("x", T + 1, bid=99.0, ask=100.0, ask_size=10.0)
    f = [e.fee for e in ev if isinstance(e, OrderFilled)]
    assert f == pytest.approx([0.04 + 0.4 + 1.0, 0.06 + 0.6])
    assert a.fees == pytest.approx(sum(f))
    assert a.cash == pytest.approx(100_000 - 1000 - sum(f))


def test_slippage_in_ticks_and_fraction_of_spread_is_adverse_on_market_fills_only():
    a = account(slippage=Slippage(ticks=2, spread_fraction=0.5))
    a.accept(order("buy", 1), T)
    a.accept(order("sell", 1), T)
    a.accept(order("buy", 1, order_type="limit", limit_price=101.0), T)
    prices = [f[2] for f in fills(a.match("x", T, bid=99.0, ask=101.0))]
    # 2 ticks of 0.5 plus half of a 2.0 spread = 2.0 worse; the limit fills at the quote.
    assert prices == [103.0, 97.0, 101.0]


def test_ioc_fills_what_it_can_and_cancels_the_rest():
    a = account()
    a.accept(order("buy", 10, tif="IOC"), T)
    events = a.match("x", T, bid=99.0, ask=100.0, ask_size=4.0)
    assert fills(events) == [("buy", 4.0, 100.0, "taker", 6.0)]
    assert isinstance(events[-1], OrderCancelled)
    assert events[-1].remaining == 6.0
    assert not a.working(events[-1].client_id)


def test_fok_fills_in_full_or_not_at_all():
    a = account()
    a.accept(order("buy", 10, tif="FOK"), T)
    events = a.match("x", T, bid=99.0, ask=100.0, ask_size=4.0)
    assert fills(events) == []
    assert events[0].reason.startswith("FOK")
    a.accept(order("buy", 10, tif="FOK"), T)
    assert fills(a.match("x", T, bid=99.0, ask=100.0, ask_size=40.0)) == [
        ("buy", 10.0, 100.0, "taker", 0.0)]


def test_a_day_order_expires_at_the_end_of_its_utc_day():
    a = account()
    a.accept(order("buy", 1, order_type="limit", limit_price=50.0, tif="DAY"), T)
    assert a.match("x", T + 3600, bid=99.0, ask=100.0) == []
    midnight = 1_700_006_400.0  # 2023-11-15 00:00 UTC
    events = a.match("x", midnight, bid=99.0, ask=100.0)
    assert [e.reason for e in events] == ["DAY order expired"]


def test_cancel_and_modify_a_resting_order():
    a = account()
    accepted = a.accept(order("buy", 5, order_type="limit", limit_price=90.0), T)
    cid = accepted.client_id
    assert a.match("x", T, bid=99.0, ask=100.0) == []  # rests on the book
    a.modify(ModifyOrder(client_id=cid, size=8, limit_price=99.5), T + 1)
    assert fills(a.match("x", T + 2, bid=99.0, ask=99.5)) == [("buy", 8.0, 99.5, "maker", 0.0)]
    other = a.accept(order("sell", 5, order_type="limit", limit_price=200.0), T).client_id
    assert a.cancel(other, T + 3).remaining == 5.0
    assert fills(a.match("x", T + 4, bid=250.0, ask=251.0)) == []
    cid2 = a.accept(order("buy", 5, order_type="limit", limit_price=90.0), T).client_id
    a.match("x", T + 5, bid=89.0, ask=89.5, ask_size=2.0)
    with pytest.raises(ValueError, match="not above"):
        a.modify(ModifyOrder(client_id=cid2, size=2.0), T + 6)


def test_a_flip_through_zero_realizes_the_closed_part_and_opens_the_rest_at_the_fill():
    a = account(cash=0.0, risk=RiskLimits(leverage=None))  # accounting only: no buying power
    a.accept(order("buy", 10), T)
    a.match("x", T, bid=100.0, ask=100.0)
    a.accept(order("sell", 25), T)
    a.match("x", T + 1, bid=110.0, ask=110.0)
    q, avg, realized, fees = a.positions[0]
    assert (q, avg, realized, fees) == (-15.0, 110.0, 100.0, 0.0)
    assert a.cash == -1000.0 + 2750.0
    a.accept(order("buy", 15), T)
    a.match("x", T + 2, bid=105.0, ask=105.0)
    assert a.position("x") == 0.0
    assert a.realized == 100.0 + 15 * 5
    assert a.cash == pytest.approx(a.realized)


def test_reduce_only_never_grows_or_flips_a_position():
    a = account()
    a.accept(order("buy", 3), T)
    a.match("x", T, bid=99.0, ask=100.0)
    a.accept(order("sell", 10, reduce_only=True), T)
    events = a.match("x", T + 1, bid=101.0, ask=102.0)
    assert fills(events) == [("sell", 3.0, 101.0, "taker", 7.0)]
    assert isinstance(events[-1], OrderCancelled)
    assert a.position("x") == 0.0


def test_latency_delays_arrival_at_the_book():
    a = account(latency_ms=250)
    a.accept(order("buy", 1), T)
    assert fills(a.match("x", T + 0.2, bid=99.0, ask=100.0)) == []
    assert fills(a.match("x", T + 0.25, bid=99.0, ask=100.5)) == [
        ("buy", 1.0, 100.5, "taker", 0.0)]


def test_equity_marks_positions_to_the_mid():
    a = account(cash=1000.0)
    a.accept(order("buy", 2), T)
    a.match("x", T, bid=99.0, ask=101.0)
    a.mark("x", 105.0)
    assert a.equity() == 1000.0 - 202.0 + 210.0
    assert math.isclose(a.positions_view()[0].unrealized, 2 * (105 - 101))
