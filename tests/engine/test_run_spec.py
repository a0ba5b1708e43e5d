"""One description of a run: built from flat options with one-line errors, round-tripped to
sweep workers, and read the same way by backtests and live runs."""

from __future__ import annotations

import pytest

import engine
from engine.run_spec import RunSpec, RunSpecError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
DAILY = str(ROOT / "providers" / "csvfile" / "samples" / "demo_daily.csv")
SMA = str(ROOT / "strategies" / "sma_cross.py")


@pytest.mark.parametrize(("options", "message"), [
    ({"leverage": 0}, "leverage is a positive multiple of equity"),
    ({"cash": -1}, "cash must be positive"),
    ({"commission": 0.5}, "commission is a fraction"),
    ({"fees": "bitstamp"}, "unknown fee preset 'bitstamp'"),
    ({"lots": "lifo"}, "lots must be one of fifo, average"),
    ({"speed": 3}, "unknown run option 'speed'"),
])
def test_a_bad_option_is_one_line_naming_it(options, message):
    with pytest.raises(RunSpecError, match=message):
        RunSpec.build(**options)


def test_what_workers_get_rebuilds_the_same_description():
    spec = RunSpec.build(data=DAILY, cash=50_000, fees="kraken", slippage=0.001,
                         close_at_end=True, risk_free=0.02)
    again = RunSpec.build(**spec.options(), data=DAILY)
    assert again == spec
    assert spec.replace(cash=10).account.cash == 10
    assert spec.replace(cash=10).costs == spec.costs


def test_a_backtest_reads_the_description_as_its_keywords_would_build_it():
    spec = RunSpec.build(data=DAILY, cash=50_000, commission=0.001, bootstrap=False)
    a = engine.backtest(SMA, spec=spec, params={"log_bars": False})
    b = engine.backtest(SMA, DAILY, cash=50_000, commission=0.001, bootstrap=False,
                        params={"log_bars": False})
    assert a.to_json() == b.to_json()
    assert a.stats["costs"] == "commission 0.1%"


def test_a_paper_run_takes_its_account_from_the_description(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path))
    spec = RunSpec.build(symbols=["btcusd"], timeframe="1s", cash=250_000, fees="binance",
                         leverage=3)
    result = engine.run(SMA, spec=spec, duration=2, params={"fast": 2, "slow": 3},
                        paper="desc", provider_options={"seed": 3, "tick_rate": 50})
    assert result.ok, result.errors
    assert result.symbols == ["btcusd"]
    from engine.clearing.broker import open_account
    from engine.clock import ReplayClock

    broker = open_account("desc", ["btcusd"], clock=ReplayClock(0.0))
    try:
        assert broker.account.cash0 == 250_000
    finally:
        broker.ledger.close()
