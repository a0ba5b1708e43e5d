"""Instruments as a user sets them: the rules' arithmetic, per symbol and for every symbol from
Python (`instruments=`) and the command line (`--lot`, `--tick`, `--min-notional`), bad values
refused in one line, and the order model that carries an equity fraction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.backtests.replay import BacktestError, run_backtest
from engine.clearing.ledger import Ledger, read_events
from engine.instruments import (
    Instrument,
    InstrumentError,
    instrument_table,
    off_step,
    parse_instrument_options,
    resolve_instrument,
    round_to_lot,
)
from engine.orders import AccountOpened, OrderAccepted, SubmitOrder
from engine.run_spec import RunSpec, RunSpecError

ROOT = Path(__file__).resolve().parents[2]
DAILY = str(ROOT / "providers" / "csvfile" / "samples" / "demo_daily.csv")


@settings(max_examples=200, derandomize=True, deadline=None)
@given(lots=st.integers(-10**6, 10**6), lot=st.sampled_from([1.0, 0.001, 0.01, 0.5, 10.0, 1e-8]),
       part=st.floats(0, 0.999))
def test_round_to_lot_truncates_toward_zero_onto_the_grid(lots, lot, part):
    size = (lots + (part if lots >= 0 else -part)) * lot
    got = round_to_lot(size, lot)
    assert got == pytest.approx(lots * lot, abs=lot * 1e-6)
    assert not off_step(got, lot)
    assert abs(got) <= abs(size) + lot * 1e-9


def test_rules_for_every_symbol_and_one_symbol_merge_rule_by_rule():
    table = instrument_table({"*": {"lot_size": 0.001, "tick_size": 0.1},
                              "GOOG": {"lot_size": 1}})
    goog = resolve_instrument(table, "GOOG")
    assert (goog.lot_size, goog.tick_size, goog.min_notional) == (1.0, 0.1, None)
    btc = resolve_instrument(table, "BTCUSD")
    assert (btc.symbol, btc.lot_size, btc.tick_size) == ("BTCUSD", 0.001, 0.1)
    none = resolve_instrument({}, "X")
    assert (none.lot_size, none.tick_size, none.min_notional, none.sizing_lot) == \
        (None, None, None, 1.0)


def test_the_rules_say_what_is_wrong():
    inst = Instrument(symbol="GOOG", lot_size=1, tick_size=0.01, min_notional=100)
    assert inst.lot_violation(2.0) is None
    assert inst.lot_violation(2.5) == ("size 2.5 is not a multiple of GOOG's lot size 1 "
                                       "(a lot-size violation: nothing was sent)")
    assert inst.tick_violation("limit", 101.23) is None
    assert inst.tick_violation("limit", 101.234) == ("limit price 101.234 is not a multiple of "
                                                     "GOOG's tick size 0.01")
    assert inst.notional_violation(1, 99.0) == ("notional 99.00 (1 GOOG at 99) is below GOOG's "
                                                "minimum of 100.00")
    assert inst.notional_violation(1, 100.0) is None


def test_cli_values_set_every_symbol_or_one():
    got = parse_instrument_options(lot_size=["0.001", "GOOG=1"], tick_size=["GOOG=0.01"],
                                   min_notional=["10"])
    assert got == {"*": {"lot_size": 0.001, "min_notional": 10.0},
                   "GOOG": {"lot_size": 1.0, "tick_size": 0.01}}


@pytest.mark.parametrize(("values", "message"), [
    (["abc"], "--lot 'abc': 'abc' is not a number (expected NUMBER or SYMBOL=NUMBER)"),
    (["GOOG=x"], "--lot 'GOOG=x': 'x' is not a number (expected NUMBER or SYMBOL=NUMBER)"),
    (["=1"], "--lot '=1': expected NUMBER or SYMBOL=NUMBER"),
    (["0"], "--lot '0': must be a positive number"),
    (["-1"], "--lot '-1': must be a positive number"),
    (["GOOG=inf"], "--lot 'GOOG=inf': must be a positive number"),
    (["1", "2"], "--lot given twice for every symbol"),
    (["GOOG=1", "GOOG=2"], "--lot given twice for GOOG"),
])
def test_bad_cli_values_are_one_line(values, message):
    with pytest.raises(InstrumentError) as info:
        parse_instrument_options(lot_size=values)
    assert str(info.value) == message


def _engine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=180, cwd=ROOT)


def test_the_backtest_command_refuses_a_bad_lot_in_one_line():
    out = _engine("backtest", str(ROOT / "strategies" / "sma_cross.py"), "--data", DAILY,
                  "--lot", "x=abc")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--lot 'x=abc': 'abc' is not a number" in lines[0]


def test_the_backtest_command_applies_the_lot(tmp_path):
    strat = tmp_path / "odd.py"
    strat.write_text("from engine import Strategy\n\n"
                     "class Odd(Strategy):\n"
                     "    def on_bar(self, symbol):\n"
                     "        if len(self.ctx.ohlcv(symbol)) == 5:\n"
                     "            self.ctx.buy(symbol, 3)\n"
                     "    def on_order_rejected(self, event):\n"
                     "        self.log('rejected: %s', event.reason)\n")
    out = _engine("backtest", str(strat), "--data", DAILY, "--lot", "2")
    assert out.returncode == 0, out.stderr
    assert "rejected: size 3 is not a multiple of" in out.stdout
    assert "lot size 2 (a lot-size violation: nothing was sent)" in out.stdout


def test_python_runs_take_instruments_by_symbol_and_refuse_bad_ones():
    spec = RunSpec.build(instruments={"GOOG": {"lot_size": 1, "tick_size": 0.01},
                                      "*": Instrument(symbol="*", min_notional=5)})
    assert spec.account.instruments["GOOG"] == Instrument(symbol="GOOG", lot_size=1,
                                                          tick_size=0.01)
    # A sweep sends the options as JSON: they come back the same.
    assert RunSpec.build(**spec.options()).account.instruments == spec.account.instruments
    with pytest.raises(RunSpecError, match=r"instruments\['GOOG'\]: lot: unknown rule"):
        RunSpec.build(instruments={"GOOG": {"lot": 1}})
    with pytest.raises(RunSpecError, match=r"instruments\['GOOG'\]: tick_size: Input should be "
                                           r"greater than 0 \(got -0.01\)"):
        RunSpec.build(instruments={"GOOG": {"tick_size": -0.01}})
    with pytest.raises(BacktestError, match="instruments: give a dict by symbol"):
        run_backtest("strategies/sma_cross.py", DAILY, instruments=[1])


def test_an_order_has_a_size_or_an_equity_fraction():
    with pytest.raises(ValueError, match="needs a size \\(units\\) or an equity_fraction"):
        SubmitOrder(symbol="x", side="buy")
    with pytest.raises(ValueError, match="reduce-only order closes a position"):
        SubmitOrder(symbol="x", side="sell", equity_fraction=0.5, reduce_only=True)
    order = SubmitOrder(client_id="c", symbol="x", side="buy", equity_fraction=0.95)
    assert order.describe() == "BUY 95% of equity in x at market GTC [c]"
    assert order.units == 0.0


def test_the_ledger_keeps_the_fraction(tmp_path):
    order = SubmitOrder(client_id="c", symbol="x", side="buy", equity_fraction=0.95,
                        stop_loss_pct=0.05)
    ledger = Ledger.open(tmp_path)
    ledger.append([AccountOpened(time=0.0, cash=1.0), OrderAccepted(time=1.0, order=order)])
    ledger.close()
    events = [e for _, e in read_events(tmp_path)]
    assert isinstance(events[1], OrderAccepted)
    assert events[1].order == order
