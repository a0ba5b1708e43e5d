"""Properties of the clearing core over random orders and quotes (Hypothesis, seeded by it)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clearing.account import Account
from engine.clearing.config import BrokerConfig, Fees, Slippage
from engine.instruments import Instrument
from engine.orders import (
    AccountOpened,
    CancelOrder,
    OrderAccepted,
    OrderFilled,
    SubmitOrder,
)

T = 1_700_000_000.0
SYMS = ["x", "y"]

orders = st.builds(
    lambda sym, side, size, kind, off, tif, ro: dict(
        symbol=sym, side=side, size=size, order_type=kind, tif=tif, reduce_only=ro,
        **({"limit_price": 100.0 + off} if kind in ("limit", "stop_limit") else {}),
        **({"stop_price": 100.0 - off if side == "sell" else 100.0 + off}
           if kind in ("stop", "stop_limit") else {})),
    st.sampled_from(SYMS), st.sampled_from(["buy", "sell"]),
    st.floats(0.5, 20.0).map(lambda v: round(v, 1)),
    st.sampled_from(["market", "limit", "stop", "stop_limit"]),
    st.floats(-5.0, 5.0).map(lambda v: round(v, 2)),
    st.sampled_from(["GTC", "GTC", "IOC", "FOK", "DAY"]), st.booleans(),
)
quotes = st.builds(
    lambda sym, mid, half, bsz, asz, trade: dict(
        symbol=sym, bid=round(mid - half, 2), ask=round(mid + half, 2), bid_size=bsz,
        ask_size=asz, trade=round(mid + trade, 2)),
    st.sampled_from(SYMS), st.floats(90.0, 110.0), st.floats(0.01, 1.0),
    st.floats(0.0, 30.0), st.floats(0.0, 30.0), st.floats(-1.0, 1.0),
)
actions = st.lists(st.one_of(orders.map(lambda o: ("order", o)),
                             quotes.map(lambda q: ("quote", q)),
                             st.integers(0, 30).map(lambda i: ("cancel", i))),
                   min_size=1, max_size=60)


def run(actions_, config: BrokerConfig):
    a = Account("p", SYMS, cash=10_000.0, config=config, instruments={"*": Instrument(symbol="*", tick_size=0.01)})
    log = [AccountOpened(time=T, account="p", cash=10_000.0)]
    ids: list[str] = []
    for k, (kind, payload) in enumerate(actions_):
        now = T + k
        if kind == "order":
            order = SubmitOrder(**payload)
            ids.append(order.client_id)
            log.append(a.accept(order, now))
        elif kind == "quote":
            q = dict(payload)
            log.extend(a.match(q.pop("symbol"), now, **q))
        elif ids and a.working(ids[payload % len(ids)]):
            log.append(a.cancel(CancelOrder(client_id=ids[payload % len(ids)]).client_id, now))
    return a, log


@settings(max_examples=150, deadline=None)
@given(actions, st.booleans())
def test_fills_conserve_cash_plus_position_value_except_fees(actions_, costly):
    config = BrokerConfig(fees=Fees(taker_pct=0.001, maker_pct=0.0005, fixed=0.5) if costly
                          else Fees(), slippage=Slippage(spread_fraction=0.5 if costly else 0.0))
    a, log = run(actions_, config)
    fills = [e for e in log if isinstance(e, OrderFilled)]
    # An independent book-keeping of the fills: cash moves by exactly price x size plus fee.
    cash = 10_000.0 - sum(f.signed_size * f.price + f.fee for f in fills)
    assert np.isclose(a.cash, cash, rtol=0, atol=1e-6)
    assert np.isclose(a.fees, sum(f.fee for f in fills), rtol=0, atol=1e-9)
    for i, sym in enumerate(SYMS):
        qty = sum(f.signed_size for f in fills if f.symbol == sym)
        assert np.isclose(a.positions[i, 0], qty, atol=1e-9)
    # Marking every position at one price p: equity = start + realized + unrealized - fees.
    p = 100.0
    a.marks[:] = p
    unrealized = sum(q * (p - avg) for q, avg, _, _ in a.positions)
    assert np.isclose(a.equity(), 10_000.0 + a.realized + unrealized - a.fees, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(actions)
def test_replaying_the_ledger_reproduces_the_account_exactly(actions_):
    config = BrokerConfig(fees=Fees(taker_pct=0.001, fixed=0.25))
    live, log = run(actions_, config)
    replayed = Account("p", SYMS, config=config, instruments={"*": Instrument(symbol="*", tick_size=0.01)})
    for event in log:
        replayed.apply(event)
    assert replayed.account.tolist() == live.account.tolist()
    assert replayed.positions.tolist() == live.positions.tolist()
    n = live.n_orders
    for field in ("remaining", "triggered", "size", "limit", "stop"):
        assert np.array_equal(replayed.orders[field][:n], live.orders[field][:n], equal_nan=True)
    # Pending (latency) and working both mean "on the book" once the account is restored.
    done = [o["status"] > 1 for o in (replayed.orders[:n], live.orders[:n])]
    assert np.array_equal(done[0], done[1])
    assert np.array_equal(replayed.orders["status"][:n][done[0]], live.orders["status"][:n][done[1]])
    assert [o.client_id for o in replayed.open_orders()] == [o.client_id for o in live.open_orders()]
    assert sum(isinstance(e, OrderAccepted) for e in log) == n
