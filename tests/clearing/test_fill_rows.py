"""An account that logs its fills as rows (`Account.log_fills`, what a replay nobody hears fills
from does) matches exactly as one that announces them: the same fills, field for field, the
same other events and the same cash, positions and order records, whether the rows come from
the kernel (`match_point`) or from `match`."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clearing.account import Account
from engine.clearing.config import BrokerConfig, Fees, Slippage
from engine.orders import OrderFilled, SubmitOrder

T = 1_700_000_000.0
CONFIG = BrokerConfig(fees=Fees(taker_pct=0.001, maker_pct=0.0002, fixed=0.5),
                      slippage=Slippage(fraction=0.0005))


def _order(n: int, kind: str, side: str, size: float, price: float) -> SubmitOrder:
    extra: dict = {}
    if kind == "limit":
        extra = {"order_type": "limit", "limit_price": price * (0.99 if side == "buy" else 1.01)}
    elif kind == "stop":
        extra = {"order_type": "stop", "stop_price": price * (1.01 if side == "buy" else 0.99)}
    elif kind == "reduce":
        extra = {"reduce_only": True}
    elif kind == "ioc":
        extra = {"order_type": "limit", "limit_price": price * 0.995, "tif": "IOC"}
    return SubmitOrder(client_id=f"c{n}", symbol="x", side=side, size=size, time=T, **extra)


orders = st.lists(st.tuples(st.sampled_from(["market"] * 4 + ["limit", "stop", "reduce", "ioc"]),
                            st.sampled_from(["buy", "sell"]),
                            st.sampled_from([0.5, 1.0, 3.0])), max_size=6)
# Each step: orders placed, then the points of a bar's path they meet; now and then a burst of
# more orders than one call's event buffer holds.
steps = st.lists(st.tuples(orders, st.lists(st.floats(90.0, 110.0), min_size=1, max_size=4),
                           st.integers(0, 12)), min_size=1, max_size=12)


def _events(events: list) -> list:
    return [e.model_dump() for e in events if not isinstance(e, OrderFilled)]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(steps)
def test_fills_logged_as_rows_are_the_fills_announced(script: list) -> None:
    told, kernel, python = (Account("a", ["x"], cash=10_000.0, config=CONFIG) for _ in range(3))
    kernel.log_fills(capacity=8)  # small: the rows grow as they fill
    python.log_fills(capacity=8)
    announced, others = [], ([], [], [])
    n = 0
    for k, (placed, path, burst) in enumerate(script):
        now = T + 60 * k
        for kind, side, size in placed + [("market", "buy" if n % 2 else "sell", 1.0)] * (
                burst * 30):
            n += 1
            order = _order(n, kind, side, size, path[0])
            for a in (told, kernel, python):
                a.accept_quietly(order, now)
        for p, price in enumerate(path):
            t, touch = now + p * 15, p > 0
            got = told.match("x", t, price, price, math.nan, math.nan, price, touch)
            announced += [(k, e) for e in got if isinstance(e, OrderFilled)]
            others[0].extend(_events(got))
            others[1].extend(_events(kernel.match_point(0, t, price, touch, k)))
            others[2].extend(_events(python.match("x", t, price, price, math.nan, math.nan,
                                                  price, touch)))
    assert others[0] == others[1] == others[2]
    rows, ids = kernel.take_fill_rows()
    rows, ids = rows.copy(), list(ids)
    python_rows, python_ids = python.take_fill_rows()
    assert ids == python_ids == [e.client_id for _, e in announced]
    assert rows.tolist() == [
        (k, e.time, e.fill_id, 0, 1 if e.side == "buy" else -1, e.liquidity == "maker",
         e.price, e.size, e.fee, e.remaining) for k, e in announced]
    # `match` tags its rows with the step of the last `match_point` (none here): the rest alike.
    rows["step"] = 0
    assert rows.tobytes() == python_rows.tobytes()
    for a in (kernel, python):
        assert a.fills == told.fills
        assert np.array_equal(a.account, told.account)
        assert np.array_equal(a.positions, told.positions)
        assert a.orders[:a.n_orders].tobytes() == told.orders[:told.n_orders].tobytes()
        assert a._start == told._start
        assert a.unsettled == told.unsettled == (a.n_orders > a._start)
