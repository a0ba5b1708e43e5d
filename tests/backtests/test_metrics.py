"""Statistics a quant can trust: each figure against an independent computation of its textbook
definition (the README's "Statistics" table), the data's own calendar, dates people read, and
backtesting.py's figures where it defines them the same way."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from engine.backtests.metrics import (
    compute_stats,
    deflated_sharpe,
    expected_max_sharpe,
    period_returns,
    periods_per_year_of,
    probabilistic_sharpe,
    sharpe_interval,
)
from engine.backtests.replay import run_backtest
from engine.strategy import load_strategy

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
DAY = 86400


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _textbook(equity: pd.Series, cash: float, per_year: float, rf: float = 0.0) -> dict:
    """Daily returns from the last equity of each day (the cash before the first), and the
    ratios by their textbook definitions, written out independently of engine.backtests.metrics."""
    daily = equity.groupby(equity.index.normalize()).last()
    values = daily.to_numpy()
    r = values / np.r_[cash, values[:-1]] - 1.0
    x = r - rf / per_year
    sd = x.std(ddof=1)
    downside = math.sqrt(sum(min(v, 0.0) ** 2 for v in x) / len(x))
    return {"vol": r.std(ddof=1) * math.sqrt(per_year), "sharpe": x.mean() / sd *
            math.sqrt(per_year), "sortino": x.mean() * per_year / (downside *
                                                                    math.sqrt(per_year)),
            "r": r}


@pytest.fixture(scope="module")
def goog_bars():
    from tests.conftest import shared_data_dir

    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not present")
    from engine.datafiles import load

    return load(data / "GOOG.csv").bars


@pytest.fixture(scope="module")
def goog(goog_bars):
    return run_backtest(load_strategy(ROOT / "strategies" / "sma_cross_fast.py"), goog_bars,
                        cash=1_000_000, commission=0.0002)


def _curve(result) -> pd.Series:
    return pd.Series(result.equity["equity"],
                     index=pd.to_datetime(result.equity["time"], unit="s"))


def test_daily_stock_bars_are_annualized_with_252_periods_and_stamped_by_their_date(goog, goog_bars):
    # Fridays were taken for weekend days and bars were stamped at their close (the next
    # midnight), so every stock backtest was annualized with 365 periods.
    assert goog.stats["periods_per_year"] == 252
    assert goog.stats["start"] == "2004-08-19"  # the file's first and last dates
    assert goog.stats["end"] == "2013-03-01"
    assert goog.equity["time"][0] == goog_bars["time"][0]
    weekdays = pd.to_datetime(goog.equity["time"], unit="s").day_of_week
    assert weekdays.max() <= 4  # no equity point on a weekend


def test_sharpe_sortino_and_volatility_equal_their_textbook_definitions(goog):
    book = _textbook(_curve(goog), 1_000_000, 252)
    assert goog.stats["volatility_pct"] == pytest.approx(book["vol"] * 100, rel=1e-12)
    assert goog.stats["sharpe"] == pytest.approx(book["sharpe"], rel=1e-12)
    assert goog.stats["sortino"] == pytest.approx(book["sortino"], rel=1e-12)
    assert goog.stats["periods"] == len(book["r"])


def test_a_risk_free_rate_is_subtracted_per_period(goog_bars):
    result = run_backtest(load_strategy(ROOT / "strategies" / "sma_cross_fast.py"), goog_bars,
                          cash=1_000_000, commission=0.0002, risk_free=0.03, bootstrap=False)
    book = _textbook(_curve(result), 1_000_000, 252, rf=0.03)
    assert result.stats["sharpe"] == pytest.approx(book["sharpe"], rel=1e-12)
    assert result.stats["sortino"] == pytest.approx(book["sortino"], rel=1e-12)
    assert result.stats["sharpe"] < 0  # 0.1 % a year does not beat 3 %


def test_figures_backtesting_py_defines_the_same_way_equal_its_own(goog, goog_bars):
    pytest.importorskip("backtesting")
    from engine.backtests.peers import run_backtesting_py

    peer = run_backtesting_py(goog_bars)["stats"]
    ours = goog.stats
    assert ours["return_pct"] == pytest.approx(peer["Return [%]"], rel=1e-9)
    assert ours["cagr_pct"] == pytest.approx(peer["CAGR [%]"], rel=1e-9)
    assert ours["max_drawdown_pct"] == pytest.approx(peer["Max. Drawdown [%]"], rel=1e-9)
    assert ours["max_drawdown_duration_days"] == peer["Max. Drawdown Duration"].days
    assert ours["num_trades"] == peer["# Trades"]
    assert ours["win_rate_pct"] == pytest.approx(peer["Win Rate [%]"], rel=1e-12)
    assert ours["best_trade_pct"] == pytest.approx(peer["Best Trade [%]"], rel=1e-9)
    assert ours["worst_trade_pct"] == pytest.approx(peer["Worst Trade [%]"], rel=1e-9)
    assert ours["avg_trade_pct"] == pytest.approx(peer["Expectancy [%]"], rel=1e-9)


def _stats_of(returns: list[float], start_day: int, step_days: int = 1, cash: float = 100.0,
              **kw) -> dict:
    eq = cash * np.cumprod(1.0 + np.asarray(returns))
    times = (start_day + step_days * np.arange(len(eq))) * DAY
    return compute_stats(times, eq, np.zeros(len(eq), bool), [], 0.0, cash, period=DAY, **kw)


def test_sortino_divides_by_the_downside_deviation_over_all_periods():
    rets = [0.02, -0.01, 0.03, -0.02, 0.01]
    stats = _stats_of(rets, start_day=0, periods_per_year=252)
    downside = math.sqrt((0.01 ** 2 + 0.02 ** 2) / 5)  # zero shortfall on the up days counts
    assert stats["sortino"] == pytest.approx(np.mean(rets) / downside * math.sqrt(252),
                                             rel=1e-12)


def test_the_calendar_decides_the_periods_per_year():
    monday = 4  # 1970-01-05 was a Monday
    weekdays = np.array([monday + 7 * w + d for w in range(20) for d in range(5)]) * DAY
    assert periods_per_year_of(weekdays, DAY) == 252
    every_day = np.arange(140) * DAY
    assert periods_per_year_of(every_day, DAY) == 365
    # Hourly bars of a market open Sunday evening to Friday (forex) are an exchange calendar.
    hours = np.arange(0, 140 * 24) * 3600
    fx = hours[((hours // DAY + 3) % 7 < 5) | (((hours // DAY + 3) % 7 == 6)
                                               & (hours % DAY >= 22 * 3600))]
    assert periods_per_year_of(fx, 3600) == 252
    # Monthly bars: as many periods as a year of the data holds.
    months = pd.date_range("2012-01-31", periods=25, freq="ME").values.astype("datetime64[s]")
    years = (months[-1] - months[0]).astype(np.int64) / (365.25 * DAY)
    assert periods_per_year_of(months.astype(np.int64), 31 * DAY) == pytest.approx(24 / years)


def test_intraday_equity_is_aggregated_to_days_first():
    times = np.arange(0, 3 * DAY, 3600)
    eq = 100.0 + np.arange(len(times), dtype=float)
    rets, starts = period_returns(times, eq, 100.0, 3600)
    assert starts.tolist() == [0, DAY, 2 * DAY]
    assert rets.tolist() == pytest.approx([123 / 100 - 1, 147 / 123 - 1, 171 / 147 - 1])


def test_probabilistic_and_deflated_sharpe_follow_bailey_and_lopez_de_prado(goog):
    r = _textbook(_curve(goog), 1_000_000, 252)["r"]
    sr = r.mean() / r.std(ddof=1)
    d = r - r.mean()
    skew = np.mean(d ** 3) / np.mean(d ** 2) ** 1.5
    kurt = np.mean(d ** 4) / np.mean(d ** 2) ** 2
    z = sr * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr ** 2)
    assert goog.stats["probabilistic_sharpe"] == pytest.approx(_phi(z), rel=1e-9)
    assert goog.stats["skew"] == pytest.approx(skew, rel=1e-9)
    assert goog.stats["kurtosis"] == pytest.approx(kurt, rel=1e-9)
    # One trial: the deflated ratio is the probabilistic one; more trials deflate it.
    assert deflated_sharpe(sr, len(r), skew, kurt, 1, 0.0) == pytest.approx(_phi(z))
    assert deflated_sharpe(sr, len(r), skew, kurt, 100, 0.02 ** 2) < _phi(z)
    assert probabilistic_sharpe(sr, len(r), skew, kurt, benchmark=sr) == pytest.approx(0.5)


def test_the_expected_best_of_unskilled_trials_is_the_mean_maximum_of_normals():
    rng = np.random.default_rng(7)
    draws = rng.standard_normal((20_000, 100)).max(axis=1).mean()
    # The closed form is an approximation: within 2 % of the simulated mean maximum.
    assert expected_max_sharpe(100, 1.0) == pytest.approx(draws, rel=0.02)
    assert expected_max_sharpe(100, 0.25) == pytest.approx(0.5 * expected_max_sharpe(100, 1.0))
    assert expected_max_sharpe(1, 1.0) == 0.0


def test_the_bootstrap_interval_resamples_the_returns_with_replacement():
    rng = np.random.default_rng(3)
    r = rng.normal(0.0004, 0.01, 400)
    lo, hi = sharpe_interval(r, 252, resamples=300, seed=11)
    draws = np.random.default_rng(11)
    sharpes = []
    for _ in range(300):
        s = r[draws.integers(0, len(r), size=len(r))]
        sharpes.append(s.mean() / s.std(ddof=1) * math.sqrt(252))
    assert (lo, hi) == pytest.approx(tuple(np.percentile(sharpes, [2.5, 97.5])), rel=1e-12)
    point = r.mean() / r.std(ddof=1) * math.sqrt(252)
    assert lo < point < hi
    assert sharpe_interval(r, 252, resamples=300, seed=11) == (lo, hi)  # same inputs, same CI


def test_json_carries_epoch_and_iso_times(goog, goog_bars):
    doc = json.loads(goog.to_json())
    assert doc["start"] == "2004-08-19"
    assert doc["start_time"] == int(goog_bars["time"][0])
    point = doc["equity"][0]
    assert (point["time"], point["time_iso"]) == (int(goog.equity["time"][0]), "2004-08-19")
    assert point["equity"] == pytest.approx(goog.equity["equity"][0])


def test_a_run_without_costs_says_so(goog_bars, tmp_path):
    free = run_backtest(load_strategy(ROOT / "strategies" / "sma_cross_fast.py"), goog_bars,
                        bootstrap=False)
    assert free.stats["costs"] == "none"
    assert "no commission, no slippage" in str(free)
    page = free.plot(tmp_path / "r.html").read_text()
    assert "No commission and no slippage" in page
    paid = run_backtest(load_strategy(ROOT / "strategies" / "sma_cross_fast.py"), goog_bars,
                        fees="kraken", slippage=0.0005, bootstrap=False)
    assert paid.stats["costs"] == "commission 0.25% maker / 0.4% taker, slippage 0.05%"
    assert "No commission" not in paid.plot(tmp_path / "p.html").read_text()


def test_a_fee_preset_charges_the_venues_published_rate(goog_bars):
    result = run_backtest(load_strategy(ROOT / "strategies" / "sma_cross_fast.py"), goog_bars,
                          fees="binance", bootstrap=False)
    for f in result.fills:
        assert f.fee == pytest.approx(f.price * f.size * 0.001, rel=1e-12)
    from engine.backtests.replay import BacktestError

    with pytest.raises(BacktestError, match="unknown fee preset 'bitstamp'.*binance"):
        run_backtest(load_strategy(ROOT / "strategies" / "sma_cross_fast.py"), goog_bars,
                     fees="bitstamp")


class _Talker:
    source = (
        "from engine import Strategy\n\n"
        "class Talker(Strategy):\n"
        "    symbols = ('x',)\n\n"
        "    def on_bar(self, symbol):\n"
        "        n = len(self.ctx.ohlcv(symbol))\n"
        "        if n % 100 == 0:\n"
        "            self.log('bar %d', n)\n"
    )


def test_strategy_log_lines_reach_the_result(tmp_path, goog_bars):
    path = tmp_path / "talker.py"
    path.write_text(_Talker.source)
    result = run_backtest(str(path), goog_bars, bootstrap=False)
    assert len(result.log) == len(goog_bars) // 100
    assert result.log[0].endswith("bar 100")
    # Stamped with the engine clock, which reads the closed bar's end in on_bar.
    close = pd.Timestamp(goog_bars["time"][99] + DAY, unit="s")
    assert result.log[0].startswith(close.strftime("%Y-%m-%dT00:00:00Z"))
    quiet = run_backtest(str(path), goog_bars, bootstrap=False, log_level="warning")
    assert quiet.log == []


def test_a_sweep_reports_its_best_with_the_deflated_sharpe_of_its_trials():
    from engine.backtests.optimize import SweepResult

    def row(sharpe, skew=0.1, kurt=3.5):
        return {"params": {"k": sharpe}, "metrics": {
            "sharpe": sharpe, "periods": 1000, "periods_per_year": 252.0, "skew": skew,
            "kurtosis": kurt}, "error": None}

    rows = [row(s) for s in (0.4, 1.1, 0.2, 0.9, -0.3)]
    result = SweepResult("s", "sharpe", rows)
    per_period = [s / math.sqrt(252) for s in (0.4, 1.1, 0.2, 0.9, -0.3)]
    want = deflated_sharpe(1.1 / math.sqrt(252), 1000, 0.1, 3.5, 5,
                           float(np.var(per_period, ddof=1)))
    assert result.n_trials == 5
    assert result.deflated_sharpe == pytest.approx(want, rel=1e-12)
    alone = SweepResult("s", "sharpe", [row(1.1)])
    assert alone.deflated_sharpe == pytest.approx(
        probabilistic_sharpe(1.1 / math.sqrt(252), 1000, 0.1, 3.5), rel=1e-12)
    assert result.deflated_sharpe < alone.deflated_sharpe  # chosen from five: deflated
