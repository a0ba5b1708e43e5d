"""One strategy, sized by fraction of equity and protected by stop-loss, take-profit and trailing
stops, gives the same fills (time, side, size, price, fee) and the same cash and equity as a
backtest on bars and as a paper run fed those bars as quotes.

The paper run is the live system: `run_live` with a paper broker, on trio's autojump MockClock,
from a provider that sends each bar as the four trades of the backtest's path through it (open,
the nearer extreme, the farther one, close, at 0, 1/4, 1/2 and 0.999 of the bar) and closes bars
by data time (`"replay": True`, as providers.csvfile does). What the two runs share, and why the
fills agree:

- A bar closes in the paper run when the next bar's open arrives, so the strategy hears it with
  that open as the latest quote: a market order placed then fills at it at once, at the time
  the backtest gives the open.
- The trades after a bar's open carry `"path": True` (the price went through every level since
  the last trade, as the bar's range says): a stop or limit crossed between two of them fills at
  its own price, as in the backtest, not at the trade that crossed it.
- The strategy sizes its entries when flat, from `ctx.equity`, which is then its cash in both
  runs. (Holding a position, equity differs between them by design: the paper account marks it
  at the latest quote, the next bar's open, the backtest at the bar's close.)
- The bars follow each other without gaps (GOOG's 700 first trading days, on consecutive days):
  the live sampler closes a period without trades (a weekend, a holiday) as a flat bar at the
  last close, as the provider spec says, so a paper run of a stock's daily file hears two flat
  bars a weekend that the backtest of the same file does not have, and signals computed over a
  window of bars part.
- The paper run never hears the last bar close (nothing comes after it); the backtest does, and
  an order placed then would not fill there either.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import trio

from engine import LiveClock, Strategy, run_live
from engine.backtests.replay import run_backtest
from engine.clearing.broker import open_account
from engine.clock import current_clock
from engine.dtypes import ohlc_dtype
from engine.provider import Provider
from engine.run_spec import RunSpec
from tests.conftest import shared_data_dir

DAY = 86400
CASH = 100_000.0
COMMISSION = 0.001


class Guarded(Strategy):
    """SMA(10/30) cross on closes read from `ctx.ohlcv`. A cross up when flat and idle buys 95 %
    of equity, in turn by `target_percent` (sized at the close) and by "95%" (sized at the
    fill); entries take turns at their protection: a stop-loss and a take-profit as percents
    of the entry, a trailing stop with a take-profit at a price, and a trailing stop alone. A
    cross down closes what is held at market (the protection goes with it)."""

    symbols = ("GOOG",)
    timeframe = "1d"

    def on_start(self):
        self.entries = 0

    def on_bar(self, symbol):
        ctx = self.ctx
        close = ctx.ohlcv(symbol)["close"]
        if len(close) < 31:
            return
        fast, slow = close[-10:].mean(), close[-30:].mean()
        was_fast, was_slow = close[-11:-1].mean(), close[-31:-1].mean()
        held = ctx.position(symbol)
        if fast > slow and was_fast <= was_slow and held == 0 and not ctx.orders(symbol):
            protection = ({"stop_loss": "4%", "take_profit": "8%"},
                          {"trail": "3%", "take_profit": float(close[-1]) * 1.12},
                          {"trail": float(close[-1]) * 0.05})[self.entries % 3]
            self.entries += 1
            if self.entries % 2:
                ctx.target_percent(symbol, 0.95, **protection)  # sized at the last close
            else:
                ctx.buy(symbol, "95%", **protection)  # sized at the fill
        elif fast < slow and was_fast >= was_slow and held > 0:
            ctx.close(symbol)


def path_points(bars: np.ndarray, period: int) -> list[tuple[float, float, bool]]:
    """The backtest's path through each bar as (time, price, on a path from the trade before):
    open, the nearer of high and low (high on a tie), the other, close; a bar lasts its period
    or to the next bar, whichever is shorter."""
    t = bars["time"]
    span = np.full(len(t), period, dtype=np.int64)
    np.minimum(period, t[1:] - t[:-1], out=span[:-1])
    out = []
    for b, s in zip(bars.tolist(), span.tolist(), strict=True):
        time, o, h, lo, c = (b[bars.dtype.names.index(f)] for f in ("time", "open", "high",
                                                                    "low", "close"))
        near, far = (h, lo) if h - o <= o - lo else (lo, h)
        out += [(time, o, False), (time + s * 0.25, near, True), (time + s * 0.5, far, True),
                (time + s * 0.999, c, True)]
    return out


def bar_path_provider(symbol: str, bars: np.ndarray, period: int) -> Provider:
    """A provider replaying `bars` of `symbol` as trades along `path_points`, each sent when
    the engine clock reaches its time; bars close by the trades' time."""
    points = path_points(bars, period)

    async def stream_quotes(send_chan, symbols, shm, feed_is_live, loglevel=None,
                            task_status=trio.TASK_STATUS_IGNORED):
        if list(symbols) != [symbol]:
            raise KeyError(f"unknown symbols {symbols!r}")
        clock = current_clock()
        first = {"symbol": symbol, "last": points[0][1], "time": points[0][0], "ticks": []}
        task_status.started(({symbol: {"replay": True}}, {symbol: first}))
        feed_is_live.set()
        for time, price, on_path in points:
            await clock.sleep_until(time)
            msg = {"symbol": symbol, "last": price, "time": time,
                   "ticks": [{"type": "trade", "price": price, "size": 1.0, "time": time}]}
            if on_path:
                msg["path"] = True
            await send_chan.send(msg)
        await trio.sleep_forever()

    async def backfill_bars(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await trio.lowlevel.checkpoint()  # no history: the run starts from the first trade

    module = types.ModuleType("bar_path")
    module.ohlc_dtype = ohlc_dtype
    module.stream_quotes = stream_quotes
    module.backfill_bars = backfill_bars
    return Provider(name="bar_path", module=module)


def _fills(fills) -> list[tuple]:
    return [(f.time, f.side, f.size, f.price, f.fee) for f in fills]


@pytest.fixture(scope="module")
def goog() -> np.ndarray:
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    from engine.datafiles import load

    bars = load(data / "GOOG.csv").bars[:700].copy()
    # Trading days one after another: the live sampler gives a period without trades (a
    # weekend) a flat bar, which the backtest of the file does not have (see the docstring).
    bars["time"] = bars["time"][0] + DAY * np.arange(len(bars))
    return bars


@pytest.fixture(scope="module")
def spec(goog) -> RunSpec:
    return RunSpec.build(data={"GOOG": goog}, cash=CASH, commission=COMMISSION)


@pytest.fixture(scope="module")
def backtest(spec):
    return run_backtest(Guarded(), spec=spec)  # its own trio.run: outside the async test


async def test_a_paper_run_fed_the_bars_as_quotes_fills_as_the_backtest(goog, spec, backtest,
                                                                       autojump_clock):
    t0 = float(goog["time"][0])
    clock = LiveClock(t0)
    broker = open_account("paper", ["GOOG"], cash=CASH, config=spec.broker_config(),
                          clock=clock, durable=False)
    run = await run_live([Guarded()], provider=bar_path_provider("GOOG", goog, DAY),
                         symbols=["GOOG"], timeframe="1d", history=0, clock=clock,
                         router=broker, duration=float(goog["time"][-1]) + DAY - t0)
    assert run.ok, run.errors
    paper = _fills(broker.fills)
    # Enough of everything to mean something: entries sized from equity, exits by each kind of
    # protection and by the strategy's own close.
    assert len(paper) > 20
    reasons = {f.client_id.rsplit(".", 1)[-1] for f in broker.fills if f.side == "sell"}
    assert {"sl", "tp"} <= reasons
    assert paper == _fills(backtest.fills)
    assert broker.account.cash == pytest.approx(
        CASH - sum((f.size if f.side == "buy" else -f.size) * f.price + f.fee
                   for f in backtest.fills), abs=1e-6)
    # Marked at the last close in both (the paper account by the last bar's closing trade).
    assert round(broker.account.equity(), 2) == round(backtest.stats["final_equity"], 2)


async def test_the_csv_replay_marks_the_trades_inside_a_bar_as_on_its_path(tmp_path,
                                                                         autojump_clock):
    """`engine run --provider csvfile --paper` gets the same matching: each bar's open is a
    trade after a gap; the three after it say the price went through every level to them."""
    from providers import csvfile

    (tmp_path / "r.csv").write_text("timestamp,open,high,low,close,volume\n"
                                    "1704067200,10,12,9.5,11,8\n1704067260,11,11.2,9,9.5,4\n")
    csvfile.configure(data_dir=str(tmp_path), speed="max")
    send, recv = trio.open_memory_channel(100)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(csvfile.stream_quotes, send, ["r"], None, trio.Event())
            msgs = [await recv.receive() for _ in range(8)]
            nursery.cancel_scope.cancel()
    finally:
        csvfile.configure(data_dir=None, speed=None)
    assert [m["last"] for m in msgs] == [10, 9.5, 12, 11, 11, 11.2, 9, 9.5]
    assert [m.get("path", False) for m in msgs] == [False, True, True, True] * 2
