"""Sizing and protective orders against backtrader on the real data in ../shared/data.

Rebalancing (`ctx.rebalance`, backtrader's `order_target_percent`): GOOG, NVDA and ORCL daily,
once to fixed weights every day and once to weights that change on the first trading day of each
month, end at backtrader's final equity to the cent with the same fills. What makes the two
comparable, convention by convention:

- Sizing. backtrader's `order_target_percent(data, w)` asks for `w x broker.getvalue()` (cash
  plus positions at the close) and sends `int((target - position value) / close)` units: the
  *order* is truncated toward zero, so a position never passes its target and one within a share
  of it is left alone. `ctx.target_percent` and `ctx.rebalance` size the same way (at the latest
  close, from `ctx.equity` marked at the closes); orders still working count here and not there,
  but none are working at a close (market orders fill at the next open).
- Fills. A market order placed at a close fills at the next bar's open in both (backtrader's
  cheat-on-open and cheat-on-close are off, no slippage); commission is 0.1 % of notional on
  every fill (`setcommission(commission=0.001)` there, `commission=0.001` here).
- Order of the orders. The sells (orders that shrink a position) are sent before the buys in
  both: `ctx.rebalance` does it, the backtrader strategy sorts its calls the same way. Both then
  fill the orders of one time in the order they were placed.
- Cash. backtrader refuses an order whose cost would take cash below zero twice: when it is
  submitted (a pseudo-execution at the close, the orders of a bar in submission order) and when it
  executes at the open (`Margin` status, the order is dropped). Here `leverage=1` checks the fill:
  for long positions, gross exposure within equity is cash at or above zero after the fill and
  its commission. The weights add up to 0.9, leaving a tenth in cash, so no open gaps far enough
  to refuse anything on this data: the test asserts that neither side refused an order, so both
  made the same trades for the same reasons.
- Dates. GOOG runs 2004-08-19 to 2013-03-01; NVDA (from 1999) and ORCL (from 1995) run to
  2014-12-31. The three are cut to the span they share, in which their trading days are the same
  (asserted), so backtrader's three data feeds advance together and every step has three bars.
- One call per step. backtrader calls `next` once per time with every feed; this engine calls
  `on_bar` per symbol, and the strategy acts at the last symbol of the step (`_step` holds the
  logic, so moving to a once-per-step callback is a one-line change).

Brackets (`ctx.buy(..., stop_loss=, take_profit=)`, backtrader's `buy_bracket` with a market or a
limit entry): the same fills and final equity on the real GOOG series. Two conventions differ
and the series is checked to stay clear of both (each has its own test below):

- The children work in the entry's own bar here (they go live as the entry fills, and the rest
  of the bar's path can reach them); backtrader activates them at the start of the next bar.
- Where one bar reaches both children, the path decides here (open, nearer extreme, farther,
  close: the nearer child fills, or the one the open gapped through); backtrader tries its
  pending orders in the order they were placed, so the stop-loss always wins, even on a bar
  that opened beyond the take-profit.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from engine import Strategy
from engine.backtests.replay import run_backtest
from engine.dtypes import ohlc_dtype
from tests.conftest import shared_data_dir

pytest.importorskip("backtrader")

DAY = 86400
SYMBOLS = ("GOOG", "NVDA", "ORCL")
COMMISSION = 0.001
# Weights by month for the monthly rebalance: each symbol leads in turn, one month holds none
# of GOOG (so a position goes flat and comes back). Each row adds up to 0.9 (see the docstring).
ROTATION = ((0.6, 0.2, 0.1), (0.1, 0.6, 0.2), (0.2, 0.1, 0.6), (0.0, 0.45, 0.45))
EQUAL = ((0.3, 0.3, 0.3),)


def _day(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).date().isoformat()


@pytest.fixture(scope="module")
def three():
    """GOOG, NVDA and ORCL daily over the span all three cover."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    from engine.datafiles import load

    bars = {s: load(data / f"{s}.csv").bars for s in SYMBOLS}
    lo = max(int(b["time"][0]) for b in bars.values())
    hi = min(int(b["time"][-1]) for b in bars.values())
    cut = {s: b[(b["time"] >= lo) & (b["time"] <= hi)] for s, b in bars.items()}
    days = [c["time"].tolist() for c in cut.values()]
    assert days[0] == days[1] == days[2], "the three series trade on different days"
    assert len(days[0]) > 2000
    return cut


# -- rebalancing ------------------------------------------------------------------------------


class Rotation(Strategy):
    """Rebalances to `table`'s next row of weights: every day, or on the first trading day of
    each month (and on the first bar)."""

    symbols = SYMBOLS
    timeframe = "1d"
    table: tuple = EQUAL
    monthly: bool = False

    def on_start(self):
        self.k = 0

    def on_bars(self, symbols):  # once per day, every symbol's bar closed
        symbol = symbols[-1]
        ctx = self.ctx
        if self.monthly and len(ctx.ohlcv(symbol)) > 1 and (
                ctx.bar_date(symbol).month == ctx.bar_date(symbol, 1).month):
            return
        ctx.rebalance(dict(zip(SYMBOLS, self.table[self.k % len(self.table)], strict=True)))
        self.k += 1


def _backtrader_rotation(bars: dict, table: tuple, monthly: bool, cash: float) -> dict:
    import backtrader as bt

    from engine.backtests.peers import bars_to_frame

    class PeerRotation(bt.Strategy):
        def __init__(self):
            self.k = 0
            self.fills, self.refused = [], 0

        def notify_order(self, order):
            if order.status in (order.Margin, order.Rejected):
                self.refused += 1
            elif order.status == order.Completed:
                self.fills.append((order.data._name, bt.num2date(order.executed.dt).date()
                                   .isoformat(), order.executed.size, order.executed.price))

        def next(self):
            d = self.datas[0]
            if monthly and len(d) > 1 and d.datetime.date(0).month == d.datetime.date(-1).month:
                return
            weights = table[self.k % len(table)]
            self.k += 1
            value = self.broker.getvalue()
            # Orders that shrink a position first, as ctx.rebalance sends them.
            plan = sorted(((w * value >= self.broker.getvalue(datas=[data]), i)
                           for i, (data, w) in enumerate(zip(self.datas, weights, strict=True))))
            for _, i in plan:
                self.order_target_percent(data=self.datas[i], target=weights[i])

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=COMMISSION)
    for s in SYMBOLS:
        cerebro.adddata(bt.feeds.PandasData(dataname=bars_to_frame(bars[s])), name=s)
    cerebro.addstrategy(PeerRotation)
    strat = cerebro.run()[0]
    return {"final_equity": float(cerebro.broker.getvalue()), "fills": strat.fills,
            "refused": strat.refused}


@pytest.mark.parametrize(("table", "monthly"), [(EQUAL, False), (ROTATION, True)],
                         ids=["daily-equal-weights", "monthly-rotating-weights"])
def test_a_target_percent_rebalance_ends_at_backtraders_equity(three, table, monthly):
    cash = 100_000.0
    ours = run_backtest(Rotation(table=table, monthly=monthly), three, cash=cash,
                        commission=COMMISSION, leverage=1)
    peer = _backtrader_rotation(three, table, monthly, cash)
    # Nothing refused on either side: the comparison is of the same trades.
    assert peer["refused"] == 0
    assert not ours.rejected
    mine = [(f.symbol, _day(f.time), f.size if f.side == "buy" else -f.size, f.price)
            for f in ours.fills]
    theirs = peer["fills"]
    assert len(mine) == len(theirs) > (1000 if not monthly else 200)
    for a, b in zip(mine, theirs, strict=True):
        # backtrader's executed price is an average over the order's fills: the open, give or
        # take its last bit.
        assert a[:3] == b[:3]
        assert a[3] == pytest.approx(b[3], rel=1e-14, abs=0), (a, b)
    assert round(ours.stats["final_equity"], 2) == round(peer["final_equity"], 2)


def daily(rows, start=1_600_000_000 - 1_600_000_000 % DAY):
    """Bars from (open, high, low, close) rows, one a day."""
    bars = np.zeros(len(rows), dtype=ohlc_dtype)
    for i, (o, h, lo, c) in enumerate(rows):
        bars[i] = (0, start + DAY * i, o, h, lo, c, 1.0, 1, (o + h + lo + c) / 4)
    return bars


def test_a_position_within_a_share_of_its_target_is_left_alone():
    """backtrader's rule: the order is truncated, not the target. 10 shares bought at 100 are
    worth 1,050 at 105; to hold 1,000 the order would be 50 / 105 of a share: none. (Truncating
    the target, 9 shares, would sell one and buy it back at the next rise.)"""

    class Hold(Strategy):
        symbols = ("x",)

        def on_bar(self, symbol):
            self.ctx.target_value(symbol, 1_000.0)

    flat = (100.0, 100.0, 100.0, 100.0)
    up = (105.0, 105.0, 105.0, 105.0)
    result = run_backtest(Hold(), {"x": daily([flat, flat, up, up])}, cash=10_000)
    assert [(f.side, f.size, f.price) for f in result.fills] == [("buy", 10.0, 100.0)]
    # Down to 95: 1,000 - 950 is half a share short; still nothing to do, in either direction.
    down = (95.0, 95.0, 95.0, 95.0)
    result = run_backtest(Hold(), {"x": daily([flat, flat, down, down])}, cash=10_000)
    assert len(result.fills) == 1


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_a_rebalances_sells_fill_before_its_buys_whatever_the_symbols_order(order):
    """All in one symbol, then all in the other: the sale must fill first at the shared open,
    or the purchase finds no cash (leverage 1) and is refused."""

    class Swap(Strategy):
        def on_bars(self, symbols):
            n = len(self.ctx.ohlcv(symbols[0]))
            if n in (1, 3):
                self.ctx.rebalance({"a": 0.95} if n == 1 else {"b": 0.95})

    bar = (100.0, 100.0, 100.0, 100.0)
    data = {s: daily([bar] * 5) for s in order}
    result = run_backtest(Swap(), data, cash=10_000, leverage=1)
    assert not result.rejected
    assert [(f.symbol, f.side, f.size) for f in result.fills] == [
        ("a", "buy", 95.0), ("a", "sell", 95.0), ("b", "buy", 95.0)]


# -- brackets ---------------------------------------------------------------------------------

SIZE = 100


class Bracket(Strategy):
    """On a 10/30 SMA cross up, when flat and nothing works: buy `SIZE` (at market, or with a
    limit 1 % under the close) with a stop-loss and a take-profit at fractions of the close; an
    entry still unfilled at a cross down is cancelled."""

    symbols = ("GOOG",)
    limit: bool = False
    stop_at: float = 0.95
    take_at: float = 1.10

    def on_start(self):
        fast = self.ctx.indicator("sma", 10, exact=True)
        slow = self.ctx.indicator("sma", 30, exact=True)
        self.cross = self.ctx.indicator("cross", fast, slow)
        self.entry = None
        self.placed = []  # (client id, stop-loss, take-profit) of each entry

    def on_bar(self, symbol):
        ctx = self.ctx
        if self.cross[-1] > 0 and ctx.position(symbol) == 0 and not ctx.orders(symbol):
            close = ctx.ohlcv(symbol)["close"][-1]
            sl, tp = close * self.stop_at, close * self.take_at
            self.entry = ctx.buy(symbol, SIZE, limit=close * 0.99 if self.limit else None,
                                 stop_loss=sl, take_profit=tp)
            self.placed.append((self.entry, sl, tp))
        elif self.cross[-1] < 0 and ctx.position(symbol) == 0 and ctx.orders(symbol):
            ctx.cancel(self.entry)


def _backtrader_bracket(bars, *, limit, stop_at, take_at, cash) -> dict:
    import backtrader as bt

    from engine.backtests.peers import bars_to_frame

    class PeerBracket(bt.Strategy):
        def __init__(self):
            fast, slow = bt.ind.SMA(period=10), bt.ind.SMA(period=30)
            self.cross = bt.ind.CrossOver(fast, slow)
            self.group, self.fills = [], []

        def notify_order(self, order):
            if order.status == order.Completed:
                self.fills.append((bt.num2date(order.executed.dt).date().isoformat(),
                                   order.executed.size, order.executed.price))

        def next(self):
            working = [o for o in self.group if o.alive()]
            if self.cross > 0 and not self.position and not working:
                close = self.data.close[0]
                entry = (dict(price=close * 0.99, exectype=bt.Order.Limit) if limit
                         else dict(exectype=bt.Order.Market))
                self.group = self.buy_bracket(size=SIZE, stopprice=close * stop_at,
                                              limitprice=close * take_at, **entry)
            elif self.cross < 0 and not self.position and working:
                self.cancel(self.group[0])  # the children go with their parent

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=COMMISSION)
    cerebro.adddata(bt.feeds.PandasData(dataname=bars_to_frame(bars)))
    cerebro.addstrategy(PeerBracket)
    strat = cerebro.run()[0]
    return {"final_equity": float(cerebro.broker.getvalue()), "fills": strat.fills}


def _where_conventions_part(bars, placed, fills) -> list[str]:
    """Entries whose bracket meets a bar where the two conventions part: the entry's own bar
    reaching a child, or a later bar (to the exit) reaching both."""
    days = {_day(t): i for i, t in enumerate(bars["time"].tolist())}
    lo, hi = bars["low"], bars["high"]
    levels = {cid: (sl, tp) for cid, sl, tp in placed}
    buys = [f for f in fills if f.side == "buy"]
    sells = [f for f in fills if f.side == "sell"]
    out = []
    for n, buy in enumerate(buys):
        sl, tp = levels[buy.client_id]
        i = days[_day(buy.time)]
        end = days[_day(sells[n].time)] if n < len(sells) else len(bars) - 1
        if lo[i] <= sl or hi[i] >= tp:
            out.append(f"entry bar {_day(bars['time'][i])} reaches a child")
        both = np.flatnonzero((lo[i + 1:end + 1] <= sl) & (hi[i + 1:end + 1] >= tp))
        out += [f"{_day(bars['time'][i + 1 + b])} reaches both children" for b in both]
    return out


@pytest.mark.parametrize("limit", [False, True], ids=["market-entry", "limit-entry"])
def test_brackets_give_backtraders_buy_bracket_fills_and_equity(limit):
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    from engine.datafiles import load

    bars = load(data / "GOOG.csv").bars
    cash = 1_000_000.0
    strat = Bracket(limit=limit)
    ours = run_backtest(strat, {"GOOG": bars}, cash=cash, commission=COMMISSION)
    # The comparison is exact where the conventions agree: on GOOG they always do.
    assert _where_conventions_part(bars, strat.placed, ours.fills) == []
    peer = _backtrader_bracket(bars, limit=limit, stop_at=0.95, take_at=1.10, cash=cash)
    mine = [(_day(f.time), f.size if f.side == "buy" else -f.size, f.price) for f in ours.fills]
    theirs = peer["fills"]
    assert len(mine) == len(theirs) > 40
    # Both children fill along the way: stop-losses (exits below the entry) and take-profits.
    moves = [out[2] - entry[2] for entry, out in zip(mine[::2], mine[1::2], strict=False)]
    assert min(moves) < 0 < max(moves)
    for a, b in zip(mine, theirs, strict=True):
        assert a[:2] == b[:2]
        assert a[2] == pytest.approx(b[2], rel=1e-14, abs=0), (a, b)
    assert round(ours.stats["final_equity"], 2) == round(peer["final_equity"], 2)


class Once(Strategy):
    """Buys 10 at the first bar's close with a stop-loss at 95 and a take-profit at 110."""

    symbols = ("x",)

    def on_bar(self, symbol):
        if len(self.ctx.ohlcv(symbol)) == 1:
            self.ctx.buy(symbol, 10, stop_loss=95.0, take_profit=110.0)


def _backtrader_once(bars) -> list:
    import backtrader as bt

    from engine.backtests.peers import bars_to_frame

    class PeerOnce(bt.Strategy):
        def __init__(self):
            self.fills = []

        def notify_order(self, order):
            if order.status == order.Completed:
                self.fills.append((bt.num2date(order.executed.dt).date().isoformat(),
                                   order.executed.size, order.executed.price))

        def next(self):
            if len(self) == 1:
                self.buy_bracket(size=10, exectype=bt.Order.Market, stopprice=95.0,
                                 limitprice=110.0)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(10_000)
    cerebro.adddata(bt.feeds.PandasData(dataname=bars_to_frame(bars)))
    cerebro.addstrategy(PeerOnce)
    return cerebro.run()[0].fills


def _fills(result) -> list:
    return [(_day(f.time), f.size if f.side == "buy" else -f.size, f.price) for f in result.fills]


def test_children_work_in_the_entrys_own_bar_here_and_from_the_next_bar_in_backtrader():
    bars = daily([(100, 100, 100, 100),
                  (100, 101, 94, 99),    # the entry's bar: its low passes the stop-loss
                  (99, 100, 98, 99),
                  (98, 99, 90, 92)])     # the next bar to reach it
    days = [_day(t) for t in bars["time"].tolist()]
    ours = _fills(run_backtest(Once(), {"x": bars}, cash=10_000))
    assert ours == [(days[1], 10, 100.0), (days[1], -10, 95.0)]
    assert _backtrader_once(bars) == [(days[1], 10, 100.0), (days[3], -10, 95.0)]


@pytest.mark.parametrize(("bar", "ours_exit", "theirs_exit"), [
    ((108, 111, 94, 100), 110.0, 95.0),   # the high is nearer the open: the path meets it first
    ((96, 111, 94, 100), 95.0, 95.0),     # the low is nearer: both take the stop-loss
    ((112, 113, 94, 100), 112.0, 95.0),   # opened beyond the take-profit: filled at that open
], ids=["high-nearer", "low-nearer", "gap-past-take-profit"])
def test_a_bar_reaching_both_children_takes_the_paths_first_here_and_the_stop_in_backtrader(
        bar, ours_exit, theirs_exit):
    bars = daily([(100, 100, 100, 100), (100, 101, 99, 100), bar, (100, 100, 100, 100)])
    days = [_day(t) for t in bars["time"].tolist()]
    ours = _fills(run_backtest(Once(), {"x": bars}, cash=10_000))
    assert ours == [(days[1], 10, 100.0), (days[2], -10, ours_exit)]
    assert _backtrader_once(bars) == [(days[1], 10, 100.0), (days[2], -10, theirs_exit)]
