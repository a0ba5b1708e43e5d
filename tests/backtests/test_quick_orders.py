"""A replay's plain market orders take a short way to the book (`PaperBroker.submit_market`,
their `SubmitOrder` built only when read): the same results, byte for byte, as the long way
(`replay.QUICK_ORDERS` off, or a strategy that hears its fills)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Strategy
from engine.backtests import replay
from engine.backtests.replay import run_backtest
from engine.clearing.broker import PaperBroker
from tests.backtests.bars import walk

BARS = 60
SYMBOLS = ("aaa", "bbb", "ccc")


def _data(n_symbols: int, shifted: bool) -> dict[str, np.ndarray]:
    """One to three symbols' seeded walks; `shifted`: the second starts two bars later and
    the third has every other bar missing, so the replay merges steps of several times."""
    data = {}
    for j in range(n_symbols):
        bars = walk(BARS, seed=11 + j)
        if shifted and j == 1:
            bars = walk(BARS, seed=11 + j, start=1_600_000_000 + 120)
        if shifted and j == 2:
            bars = bars[::2].copy()
        data[SYMBOLS[j]] = bars
    return data


def _scripted(actions: dict, at_stop: list, hear_fills: bool) -> type[Strategy]:
    """A strategy that does `actions[(symbol, bar number)]` at that bar's close and `at_stop`
    in on_stop: targets (reversals and flat ones among them), buys, sells, closes and a limit
    order now and then (the long way, between the short ones)."""

    class Scripted(Strategy):
        timeframe = "1m"

        def on_start(self) -> None:
            self.bars_seen: dict[str, int] = {}

        def act(self, symbol: str, kind: str, value: float) -> None:
            ctx = self.ctx
            self.log("%s %s %g", symbol, kind, value)
            if kind == "target":
                ctx.target(symbol, value)
            elif kind == "target_int":
                ctx.target(symbol, int(value))
            elif kind == "buy":
                ctx.buy(symbol, abs(value) or 1.0)
            elif kind == "sell":
                ctx.sell(symbol, abs(value) or 1.0)
            elif kind == "close":
                ctx.close(symbol)
            elif kind == "limit":
                close = float(ctx.ohlcv(symbol)["close"][-1])
                if value >= 0:
                    ctx.buy(symbol, abs(value) or 1.0, limit=close * 0.999)
                else:
                    ctx.sell(symbol, abs(value), limit=close * 1.001)

        def on_bar(self, symbol: str) -> None:
            n = self.bars_seen[symbol] = self.bars_seen.get(symbol, 0) + 1
            for kind, value in actions.get((symbol, n), ()):
                self.act(symbol, kind, value)

        def on_stop(self) -> None:
            for symbol, kind, value in at_stop:
                if symbol in self.ctx.symbols:
                    self.act(symbol, kind, value)

    if hear_fills:
        # Of the same name: the results name their strategy.
        return type("Scripted", (Scripted,), {"on_fill": lambda self, fill: None})
    return Scripted


sizes = st.sampled_from([-3.0, -2.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 1e-13])
kinds = st.sampled_from(["target"] * 6 + ["target_int", "buy", "sell", "close", "limit"])
action = st.tuples(kinds, sizes)


@st.composite
def scripts(draw: st.DrawFn) -> tuple:
    n_symbols = draw(st.integers(1, 3))
    shifted = draw(st.booleans())
    symbols = SYMBOLS[:n_symbols]
    keys = st.tuples(st.sampled_from(symbols), st.integers(1, BARS))
    # Several actions in one bar now and then (a target, then another of the same symbol).
    actions = draw(st.dictionaries(keys, st.lists(action, min_size=1, max_size=3),
                                   max_size=25))
    at_stop = draw(st.lists(st.tuples(st.sampled_from(symbols), kinds, sizes), max_size=3))
    return n_symbols, shifted, actions, at_stop


def _run(script: tuple, *, quick: bool, hear_fills: bool = False, **options: object) -> str:
    n_symbols, shifted, actions, at_stop = script
    old = replay.QUICK_ORDERS
    replay.QUICK_ORDERS = quick
    try:
        result = run_backtest(_scripted(actions, at_stop, hear_fills),
                              _data(n_symbols, shifted), cash=10_000.0, commission=0.001,
                              slippage=0.0005, **options)
    finally:
        replay.QUICK_ORDERS = old
    return result.to_json()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(scripts())
def test_the_short_way_gives_the_results_of_the_long_way(script: tuple) -> None:
    quick = _run(script, quick=True)
    assert quick == _run(script, quick=False)
    assert quick == _run(script, quick=True, hear_fills=True)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(scripts())
def test_the_short_way_at_the_end_and_with_instruments(script: tuple) -> None:
    # Closing at the end adds orders after the run; a lot size on one symbol sends its
    # orders the long way (its rules are checked), the others' the short way.
    options = {"close_at_end": True, "instruments": {"bbb": {"lot_size": 0.5}}}
    assert _run(script, quick=True, **options) == _run(script, quick=False, **options)


def test_plain_market_orders_take_the_short_way(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = []
    submit_market = PaperBroker.submit_market

    def spy(self: PaperBroker, *args: object) -> bool:
        took = submit_market(self, *args)
        taken.append(took)
        return took

    monkeypatch.setattr(PaperBroker, "submit_market", spy)
    script = (2, False, {("aaa", 5): [("target", 2.0)], ("bbb", 6): [("target", -1.0)],
                         ("aaa", 9): [("target", -2.0), ("close", 0.0)]}, [])
    result = run_backtest(_scripted(script[2], [], False), _data(2, False), cash=10_000.0)
    # close() is reduce-only: the long way; the targets the short way. The close sells the
    # long 2 still held when placed, after the target's sell of 4 went short: cancelled.
    assert taken == [True, True, True, False]
    assert [(o.side, o.size, o.reduce_only) for o in result.orders.submitted] == [
        ("buy", 2.0, False), ("sell", 1.0, False), ("sell", 4.0, False), ("sell", 2.0, True)]
    assert result.orders.statuses() == ["filled", "filled", "filled", "cancelled"]
    assert result.orders.reasons == {"o4": "reduce-only: position flat"}
    assert _run(script, quick=True) == _run(script, quick=False)


def test_no_short_way_when_someone_hears_the_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(PaperBroker, "submit_market",
                        lambda self, *a: calls.append(a) or False)
    script = (1, False, {("aaa", 3): [("target", 1.0)]}, [])
    run_backtest(_scripted(script[2], [], True), _data(1, False), cash=10_000.0)
    assert calls == []  # on_fill: the fills are events, the orders take the long way


def test_the_orders_built_when_read_pickle_as_the_orders() -> None:
    script = (1, False, {("aaa", 3): [("target", 1.0)], ("aaa", 7): [("target", -1.0)]}, [])
    result = run_backtest(_scripted(script[2], [], False), _data(1, False), cash=10_000.0)
    copied = pickle.loads(pickle.dumps(result.orders))
    assert type(copied.submitted) is list
    assert copied.submitted == list(result.orders.submitted)
    assert [(o.client_id, o.side, o.size, o.order_type, o.tif) for o in copied.submitted] == [
        ("o1", "buy", 1.0, "market", "GTC"), ("o2", "sell", 2.0, "market", "GTC")]
    assert copied.statuses() == result.orders.statuses() == ["filled", "filled"]
