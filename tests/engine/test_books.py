"""Strategy books (`engine.books`): each strategy's own share of an account, kept from its orders
and events, equals the share rebuilt from the account; names and client ids never collide."""

from __future__ import annotations

import math

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import BrokerConfig, LiveClock, RiskLimits, Strategy, open_account, run_live
from engine.books import BookRouter, StrategyBook, book_of, distinct_names, id_prefix, open_book
from engine.clock import ReplayClock
from engine.orders import CancelOrder, ModifyOrder, OrderFilled, SubmitOrder
from engine.strategy import StrategyError
from tests.engine.scripted import make_provider

T0 = 1_700_000_000.0
SYMS = ["x", "y"]
WHO = ["a", "b"]


def test_a_book_counts_an_order_working_from_the_moment_it_is_sent():
    book = StrategyBook("s")
    book.submitted(SubmitOrder(client_id="s.1", symbol="x", side="buy", size=3.0))
    assert (book.position("x"), book.working_position("x")) == (0.0, 3.0)
    fill = dict(time=T0, fill_id=1, client_id="s.1", symbol="x", side="buy", price=100.0,
                fee=0.0, liquidity="taker")
    book.apply([OrderFilled(size=1.0, remaining=2.0, **fill)])
    assert (book.position("x"), book.working_position("x")) == (1.0, 2.0)
    book.apply([OrderFilled(size=2.0, remaining=0.0, **fill)])
    assert (book.position("x"), book.working_position("x")) == (3.0, 0.0)
    assert book.positions() == {"x": 3.0}
    assert StrategyBook.restore(book.snapshot()).snapshot() == book.snapshot()


def test_a_book_without_a_broker_counts_an_intent_as_filled():
    book = StrategyBook("s", fills_on_submit=True)
    book.submitted(SubmitOrder(client_id="s.1", symbol="x", side="sell", size=2.0))
    assert (book.position("x"), book.working_position("x")) == (-2.0, 0.0)


def test_distinct_names_keep_the_first_and_number_the_others_in_order():
    assert distinct_names(["A", "B", "A", "A", "B"]) == ["A", "B", "A#2", "A#3", "B#2"]
    assert distinct_names(["A", "A#2", "A"]) == ["A", "A#2", "A#3"]


def test_an_id_prefix_is_never_one_an_earlier_order_used():
    assert id_prefix("S", T0 + 0.7) == f"S.{int(T0)}."
    taken = [f"S.{int(T0)}.1", f"S.{int(T0)}-2.4"]
    assert id_prefix("S", T0, taken) == f"S.{int(T0)}-3."
    assert id_prefix("S#2", T0, taken) == f"S#2.{int(T0)}."


# -- property: the book kept from events equals the book rebuilt from the account ------------

orders = st.builds(
    lambda who, sym, side, size, kind, off, tif, ro: (who, dict(
        symbol=sym, side=side, size=size, order_type=kind, tif=tif, reduce_only=ro,
        **({"limit_price": 100.0 + off} if kind == "limit" else {}))),
    st.sampled_from(WHO), st.sampled_from(SYMS), st.sampled_from(["buy", "sell"]),
    st.floats(0.5, 20.0).map(lambda v: round(v, 1)), st.sampled_from(["market", "limit"]),
    st.floats(-3.0, 3.0).map(lambda v: round(v, 2)), st.sampled_from(["GTC", "GTC", "IOC"]),
    st.booleans())
quotes = st.builds(
    lambda sym, mid, half, bsz, asz: {
        "symbol": sym, "bid": round(mid - half, 2), "ask": round(mid + half, 2),
        "ticks": [{"type": "bid", "price": round(mid - half, 2), "size": bsz},
                  {"type": "ask", "price": round(mid + half, 2), "size": asz}]},
    st.sampled_from(SYMS), st.floats(95.0, 105.0), st.floats(0.01, 1.0),
    st.floats(0.0, 15.0), st.floats(0.0, 15.0))
actions = st.lists(st.one_of(
    orders.map(lambda o: ("order", o)), quotes.map(lambda q: ("quote", q)),
    st.tuples(st.sampled_from(WHO), st.integers(0, 30)).map(lambda c: ("cancel", c)),
    st.tuples(st.sampled_from(WHO), st.integers(0, 30), st.floats(0.5, 30.0)).map(
        lambda m: ("modify", m))), min_size=1, max_size=60)


@settings(max_examples=120, deadline=None, derandomize=True)
@given(actions)
def test_the_book_kept_from_events_equals_the_book_rebuilt_from_the_account(actions_):
    clock = ReplayClock(T0)
    broker = open_account("p", SYMS, cash=1e6, clock=clock, durable=False,
                          config=BrokerConfig(risk=RiskLimits(leverage=None)))
    own: dict[str, BookRouter] = {}
    sent: dict[str, list[str]] = {w: [] for w in WHO}
    for who in WHO:
        own[who], _ = open_book(broker, who, clock.now())
        broker.attach(who, own[who].listen(lambda events: None))
    for k, (kind, payload) in enumerate(actions_):
        clock.advance(T0 + k)
        if kind == "order":
            who, fields = payload
            cid = f"{who}.{k}"
            sent[who].append(cid)
            own[who].submit(SubmitOrder(client_id=cid, strategy=who, **fields))
        elif kind == "quote":
            broker.on_batch([dict(payload, time=clock.now())], [], [])
        elif sent[payload[0]]:
            who, i = payload[0], payload[1] % len(sent[payload[0]])
            if kind == "cancel":
                own[who].cancel(CancelOrder(client_id=sent[who][i], strategy=who))
            else:
                own[who].modify(ModifyOrder(client_id=sent[who][i], size=round(payload[2], 1),
                                            strategy=who))
    for sym in SYMS:
        total = 0.0
        for who in WHO:
            kept = own[who].book
            rebuilt, ids = book_of(broker.account, who)
            assert sorted(ids) == sorted(sent[who])
            assert math.isclose(kept.position(sym), rebuilt.position(sym), abs_tol=1e-9)
            assert math.isclose(kept.working_position(sym), rebuilt.working_position(sym),
                                abs_tol=1e-9)
            total += kept.position(sym)
        # The account holds the sum of its strategies' books.
        assert math.isclose(broker.account.position(sym), total, abs_tol=1e-9)


# -- item 11: two instances of one class on one account, through the Python API --------------


class Target(Strategy):
    symbols = ("aaa",)
    size: float = 1.0

    def on_quote(self, quote):
        self.ctx.target("aaa", self.size)


async def _run_twins(path, clock, sizes):
    broker = open_account("twins", ["aaa"], cash=1e6, clock=clock, path=path,
                          config=BrokerConfig(risk=RiskLimits(leverage=None)))
    try:
        return await run_live([Target(size=sizes[0]), Target(size=sizes[1])],
                              provider=make_provider(every=0.5), symbols=["aaa"], duration=3,
                              clock=clock, router=broker, history=0)
    finally:
        broker.ledger.close()


def test_two_strategies_of_one_class_share_an_account_and_resume_their_own_books(tmp_path):
    path = tmp_path / "twins"
    runs = []
    for sizes in ((2.0, -3.0), (3.0, -1.0)):
        # Both runs start at the same clock second: their client ids must still differ.
        runs.append(trio.run(_run_twins, path, LiveClock(T0), sizes,
                             clock=trio.testing.MockClock(autojump_threshold=0)))
    first, again = runs
    assert first.ok, first.errors
    assert again.ok, again.errors
    assert [s.name for s in first.strategies] == ["Target", "Target#2"]
    assert [s.positions for s in first.strategies] == [{"aaa": 2.0}, {"aaa": -3.0}]
    assert [s.orders for s in first.strategies] == [1, 1]
    assert first.account["positions"][0]["quantity"] == -1.0
    # Restarted on the same account with new targets, each trades from its own position: one
    # order for the difference, under a client id no order of the first run used.
    assert sorted((o.strategy, o.side, o.size) for o in again.orders) == [
        ("Target", "buy", 1.0), ("Target#2", "buy", 2.0)]
    assert [s.positions for s in again.strategies] == [{"aaa": 3.0}, {"aaa": -1.0}]
    ids = [o.client_id for o in first.orders + again.orders]
    assert len(set(ids)) == 4, ids


async def test_a_name_that_cannot_be_set_is_one_clear_error(autojump_clock):
    class Fixed(Strategy):
        symbols = ("aaa",)

        @property
        def name(self):
            return "fixed"

    with pytest.raises(StrategyError, match="two strategies are named 'fixed'"):
        await run_live([Fixed(), Fixed()], provider=make_provider(), symbols=["aaa"],
                       duration=1, history=0)


def test_the_book_router_reads_cash_and_risk_from_the_shared_account():
    broker = open_account("p", SYMS, cash=5.0, clock=ReplayClock(T0), durable=False)
    own, prefix = open_book(broker, "a", T0)
    assert own.account is broker.account
    assert own.refresh_marks is broker.refresh_marks
    assert prefix == f"a.{int(T0)}."
    intents, _ = open_book(object(), "a", T0)
    assert intents.account is None
    assert intents.book.fills_on_submit
