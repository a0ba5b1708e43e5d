"""The example strategies users copy do what their docstrings say: on the real data as backtests,
and in paper runs on the simulated market."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from engine import LiveClock, run_live
from engine.backtests.replay import run_backtest
from engine.clearing.broker import open_account
from engine.provider import load_provider
from engine.strategy import load_strategy
from tests.conftest import shared_data_dir

ROOT = Path(__file__).resolve().parents[2]
RSI = ROOT / "strategies" / "rsi_reversion.py"
ROTATION = ROOT / "strategies" / "momentum_rotation.py"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def data():
    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data is not present")
    return d


def _day(t: float) -> dt.date:
    return dt.datetime.fromtimestamp(t, dt.UTC).date()


def test_rsi_reversion_buys_with_95_percent_and_protects_every_entry(data):
    result = run_backtest(RSI, str(data / "GOOG.csv"), cash=100_000, commission=0.001)
    fills = list(result.fills)
    entries = [f for f in fills if f.side == "buy"]
    assert len(entries) >= 10
    assert not result.rejected
    # Each entry is whole shares worth 95 % of the equity then (all cash: it enters flat),
    # commission included, as backtesting.py's buy(size=0.95) sizes it.
    cash = 100_000.0
    for f in fills:
        if f.side == "buy":
            assert f.size == math.floor(0.95 * cash / (f.price * 1.001))
        cash += (-1 if f.side == "buy" else 1) * f.size * f.price - f.fee
    assert cash == pytest.approx(result.stats["final_equity"], abs=1e-6)
    # Exits: the stop-loss, the take-profit or the RSI close; the brackets fill at their level
    # (or at a gap's open beyond it).
    exits = {f.client_id.rsplit(".", 1)[-1] for f in fills if f.side == "sell"}
    assert {"sl", "tp"} <= exits
    by_id = {f.client_id: f for f in fills}
    for f in fills:
        if f.side == "sell" and f.client_id.endswith(".sl"):
            entry = by_id[f.client_id[:-3]]
            assert f.price <= entry.price * 0.95 + 1e-9


def test_momentum_rotation_trades_only_on_a_months_first_bar(data):
    paths = ",".join(str(data / f"{s}.csv") for s in ("GOOG", "NVDA", "ORCL"))
    # Up to GOOG's last bar: a symbol whose data ends can no longer be traded out of.
    result = run_backtest(ROTATION, paths, cash=100_000, commission=0.001, end="2013-03-01")
    assert len(result.fills) >= 50
    assert not result.rejected
    # Orders placed at the close of a month's first trading day fill at the next open: every
    # fill is on the month's second trading day (of the symbols trading then).
    days = sorted({_day(t) for b in result.bars.values() for t in b["time"]})
    firsts = [days[i] for i in range(1, len(days)) if days[i].month != days[i - 1].month]
    second = {days[days.index(d) + 1] for d in firsts if days.index(d) + 1 < len(days)}
    assert {_day(f.time) for f in result.fills} <= second
    # Never more than `top` (2) symbols held after a rebalance.
    held: dict[str, float] = {}
    for day in sorted({_day(f.time) for f in result.fills}):
        for f in result.fills:
            if _day(f.time) == day:
                held[f.symbol] = held.get(f.symbol, 0.0) + f.size * (1 if f.side == "buy" else -1)
        assert sum(1 for v in held.values() if v > 0) <= 2


@pytest.mark.parametrize(("path", "symbols", "params"), [
    (RSI, ["aapl"], {"period": 3, "oversold": 45.0, "overbought": 90.0, "stop": 0.0005,
                     "target": 0.0005}),
    (ROTATION, ["aapl", "msft", "nvda"], {"lookback": 3, "rebalance": "bar",
                                          "trend_filter": False}),
])
async def test_the_examples_trade_a_paper_account_on_the_simulated_market(
        autojump_clock, path, symbols, params):
    clock = LiveClock(T0)
    broker = open_account("example", symbols, cash=100_000.0, clock=clock, durable=False)
    sim = load_provider("providers.sim")
    sim.module.configure(seed=7)  # the market these parameters were chosen on, whatever ran before
    strat = load_strategy(path)(**params)
    # A budget no first call can overrun under load: the run stays on the loop, deterministic
    # under the mock clock (the worker thread's path has its own tests).
    try:
        result = await run_live([strat], provider=sim, symbols=symbols,
                                timeframe="1s", duration=40, clock=clock, router=broker,
                                callback_budget=60.0)
    finally:
        sim.module.reset()
    assert result.ok, result.errors
    assert broker.fills
    # Live, each symbol fills on its own next quote: a rebalance's buy may meet its quote
    # before the sell that pays for it, and at leverage 1 it is then cancelled with the reason.
    for r in broker.rejections:
        assert "buying power at the fill" in r.reason, r.reason
        assert path is ROTATION
    summary = broker.summary()
    assert np.isfinite(summary["equity"])
    if path is RSI:
        # The bracket is attached by the engine: its children appear once entries fill.
        ids = [f.client_id for f in broker.fills]
        entries = [i for i in ids if not i.endswith((".sl", ".tp"))]
        assert entries
        # Brackets of a few cents: the entries leave through their children.
        assert any(i.endswith((".sl", ".tp")) for i in ids)
