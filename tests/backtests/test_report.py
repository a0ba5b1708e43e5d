"""The HTML report: written, self-contained, with the statistics and trades, and small for long
runs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pytest

from engine.backtests.report import MAX_TRADE_ROWS, candles, envelope, write_report
from engine.dtypes import ohlc_dtype

T0 = 1_700_006_400


@dataclass
class FakeResult:
    strategy: str = "SmaCross"
    params: dict = field(default_factory=lambda: {"fast": 5, "slow": 20})
    symbols: list = field(default_factory=lambda: ["btcusd"])
    timeframe: int = 60
    bars: dict = field(default_factory=dict)
    trades: list = field(default_factory=list)
    equity: np.ndarray | None = None
    stats: dict = field(default_factory=dict)


def make_bars(n: int, seed: int = 1, step: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    out = np.zeros(n, dtype=ohlc_dtype)
    out["time"] = T0 + step * np.arange(n)
    out["open"] = np.r_[close[0], close[:-1]]
    out["close"] = close
    out["high"] = np.maximum(out["open"], close) * 1.0005
    out["low"] = np.minimum(out["open"], close) * 0.9995
    out["volume"] = 1.0
    return out


def make_result(n: int, n_trades: int = 20, symbols=("btcusd",)) -> FakeResult:
    bars = {s: make_bars(n, seed=i) for i, s in enumerate(symbols)}
    b = bars[symbols[0]]
    trades = []
    for j in range(n_trades):
        i0 = (j * (n - 2)) // max(n_trades, 1)
        i1 = min(i0 + 5, n - 1)
        side = "long" if j % 2 == 0 else "short"
        sign = 1 if side == "long" else -1
        pnl = sign * (b["close"][i1] - b["close"][i0])
        trades.append({"symbol": symbols[0], "side": side, "size": 1.0,
                       "entry_time": int(b["time"][i0]), "entry_price": float(b["close"][i0]),
                       "exit_time": int(b["time"][i1]), "exit_price": float(b["close"][i1]),
                       "pnl": float(pnl), "return_pct": float(pnl / b["close"][i0] * 100),
                       "fees": 0.01, "bars": i1 - i0})
    equity = np.zeros(n, dtype=[("time", np.int64), ("equity", np.float64),
                                ("drawdown_pct", np.float64)])
    equity["time"] = b["time"]
    equity["equity"] = 10_000 * b["close"] / b["close"][0]
    peak = np.maximum.accumulate(equity["equity"])
    equity["drawdown_pct"] = (equity["equity"] / peak - 1) * 100
    stats = {"start": int(b["time"][0]), "end": int(b["time"][-1]), "return_pct": 12.3456,
             "sharpe": 1.2345, "max_drawdown_pct": float(equity["drawdown_pct"].min()),
             "num_trades": n_trades, "profit_factor": float("nan"), "note": "<b>escaped</b>"}
    return FakeResult(symbols=list(symbols), bars=bars, trades=trades, equity=equity,
                      stats=stats)


def external_refs(page: str) -> list[str]:
    return re.findall(r"<(?:script|link|img|iframe)[^>]+(?:src|href)\s*=\s*[\"']?(?:https?:)?//",
                      page, flags=re.I)


def test_the_report_is_one_self_contained_file_with_stats_and_trades(tmp_path):
    result = make_result(500, n_trades=12, symbols=("btcusd", "ethusd"))
    path = write_report(result, tmp_path / "out" / "report.html")
    assert path == tmp_path / "out" / "report.html"
    assert path.is_file()
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert external_refs(page) == []
    assert "Bokeh" in page
    assert "application/json" in page
    assert "<h1>SmaCross</h1>" in page
    assert "fast=5, slow=20" in page
    assert "Return [%]" in page
    assert "12.35" in page
    assert "Sharpe" in page
    assert ">1.2345<" in page
    assert "2023-11-15T00:00:00Z" in page  # start, as ISO 8601 UTC
    assert "&lt;b&gt;escaped&lt;/b&gt;" in page
    assert "<b>escaped</b>" not in page
    assert "Trades (12)" in page
    assert page.count("<tr><td>") == 12
    assert "btcusd" in page
    assert "ethusd" in page


def test_a_long_run_stays_small(tmp_path):
    result = make_result(200_000, n_trades=5000)
    path = write_report(result, tmp_path / "big.html")
    size = path.stat().st_size
    assert size < 4_000_000, size
    page = path.read_text()
    assert "each candle merges 67 bars" in page
    assert "Trades (5,000)" in page
    assert "trades not shown" in page
    assert page.count("<tr><td>") == MAX_TRADE_ROWS


def test_a_run_without_trades_or_bars_still_writes_a_page(tmp_path):
    empty = FakeResult(stats={"num_trades": 0})
    page = write_report(empty, tmp_path / "e.html").read_text()
    assert "No trades." in page
    assert "No bars and no equity" in page


def test_thinning_keeps_extremes():
    bars = make_bars(10_000)
    cols, k = candles(bars, limit=1000)
    assert k == 10
    assert len(cols["time"]) == 1000
    assert cols["high"].max() == bars["high"].max()
    assert cols["low"].min() == bars["low"].min()
    assert cols["open"][0] == bars["open"][0]
    assert cols["close"][-1] == bars["close"][-1]
    times = np.arange(100_001, dtype=np.float64)
    values = np.sin(times / 500.0)
    values[77_777] = -5.0
    t, v = envelope(times, values, buckets=1000)
    assert len(v) <= 2002
    assert v.min() == -5.0
    assert t[0] == 0
    assert t[-1] == 100_000
    assert (np.diff(t) > 0).all()


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_inputs(tmp_path, n):
    write_report(make_result(n, n_trades=1), tmp_path / "t.html")
