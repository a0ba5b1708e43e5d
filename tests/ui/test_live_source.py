"""What the dashboard reads from a run's memory, checked against independent computations: the
forming candle from the ticks, candles of a higher timeframe from the closed bars, indicator
values, and the board's status and log rows; and that the run's board leaves nothing behind."""

from __future__ import annotations

import logging
import os
import time
import types
from dataclasses import dataclass, field

import numpy as np
import pytest

from engine.dtypes import BID, TRADE, ohlc_dtype, tick_dtype
from engine.shm import ShmArray
from engine.ui import RunBoard, running_engines
from engine.ui._live import Chart, LiveSource
from engine.ui._messages import IndicatorDecl, RunStatus, StrategyState
from tests.conftest import segments_of


@dataclass
class StandIn:
    """The parts of a Feed a RunBoard reads."""

    ticks: ShmArray
    bars: dict
    symbols: list = field(default_factory=lambda: ["aaa", "bbb"])
    timeframe: int = 1
    provider: types.SimpleNamespace = field(
        default_factory=lambda: types.SimpleNamespace(name="stand-in"))
    # Outside a trio run: the wall clock stands in for the engine's.
    clock: types.SimpleNamespace = field(
        default_factory=lambda: types.SimpleNamespace(now=time.time))

    def tokens(self) -> dict:
        return {"ticks": self.ticks.token.model_dump(),
                "bars": {s: b.token.model_dump() for s, b in self.bars.items()}}

    def subscribe(self, fn) -> None: ...
    def unsubscribe(self, fn) -> None: ...


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path))
    ticks = ShmArray.create(tick_dtype, 4096, start=0, rolling=True)
    bars = {s: ShmArray.create(ohlc_dtype, 4096, start=0, rolling=True) for s in ("aaa", "bbb")}
    feed = StandIn(ticks, bars)
    board = RunBoard(account=None)
    board.attach(feed)
    source = None
    try:
        [info] = running_engines()
        assert info.pid == os.getpid()
        source = LiveSource(info)
        yield feed, board, source
    finally:
        if source is not None:
            source.close()
        board.close()
        for shm in (ticks, *bars.values()):
            shm.close()
            shm.unlink()
    assert not running_engines()
    assert not segments_of(os.getpid())


def _ticks(rows: list[tuple[float, float, float, int, int]]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=tick_dtype)
    for i, (t, price, size, sym, kind) in enumerate(rows):
        out[i] = (0, t, price, size, sym, kind)
    return out


def test_forming_candle_follows_the_trades_of_its_period(run):
    feed, _, source = run
    t0 = 1_800_000_000
    feed.ticks.push(_ticks([(t0 + 0.1, 10.0, 1.0, 0, TRADE), (t0 + 0.2, 12.0, 2.0, 0, TRADE),
                            (t0 + 0.3, 99.0, 5.0, 0, BID),  # a quote, not a trade
                            (t0 + 0.4, 9.0, 0.5, 0, TRADE), (t0 + 0.5, 50.0, 1.0, 1, TRADE)]))
    assert source.poll()
    assert source.forming["aaa"] == [t0, 10.0, 12.0, 9.0, 9.0, 3.5]
    assert source.forming["bbb"] == [t0, 50.0, 50.0, 50.0, 50.0, 1.0]
    feed.ticks.push(_ticks([(t0 + 0.9, 11.0, 1.0, 0, TRADE)]))
    source.poll()
    assert source.forming["aaa"] == [t0, 10.0, 12.0, 9.0, 11.0, 4.5]
    # The next second's first trade opens a new candle; once the engine closes the bar,
    # the dashboard drops its own copy of it.
    feed.ticks.push(_ticks([(t0 + 1.2, 13.0, 1.0, 0, TRADE)]))
    source.poll()
    assert source.forming["aaa"] == [t0 + 1, 13.0, 13.0, 13.0, 13.0, 1.0]
    closed = np.zeros(1, dtype=ohlc_dtype)
    closed["time"], closed["close"] = t0 + 1, 13.0
    feed.bars["aaa"].push(closed)
    source.poll()
    assert source.forming["aaa"] is None


def _bars(n: int, t0: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    b = np.zeros(n, dtype=ohlc_dtype)
    b["time"] = t0 + np.arange(n)
    close = 100 + np.cumsum(rng.normal(0, 1, n))
    b["open"] = close + rng.normal(0, 0.5, n)
    b["close"] = close
    b["high"] = np.maximum(b["open"], b["close"]) + rng.exponential(0.5, n)
    b["low"] = np.minimum(b["open"], b["close"]) - rng.exponential(0.5, n)
    b["volume"] = rng.exponential(3.0, n)
    return b


def test_higher_timeframe_candles_and_indicators_match_plain_numpy(run):
    feed, board, source = run
    t0 = 1_800_000_000  # a multiple of 5 and of 60
    bars = _bars(103, t0, seed=5)
    feed.bars["aaa"].push(bars[:50])
    board.push(RunStatus(t=1.0, quotes=0, ticks=0, bars=0, rejected=0, quotes_per_s=0.0,
                         strategies=[StrategyState(
                             name="S", state="running", quotes=0, bars=0, coalesced=0,
                             indicators=[IndicatorDecl(symbol="aaa", kind="sma",
                                                       fields=["close"], params=[3],
                                                       outputs=["value"])])]))
    source.poll()
    chart = Chart(source, "aaa", 5)
    feed.bars["aaa"].push(bars[50:])  # more bars close while the chart is open
    chart.refresh()
    # 103 one-second bars: 20 whole 5 s candles closed, the 21st still forming (3 bars in).
    groups = bars[:100].reshape(20, 5)
    assert len(chart.candles) == 20
    assert np.array_equal(chart.candles["time"], groups["time"][:, 0])
    assert np.array_equal(chart.candles["open"], groups["open"][:, 0])
    assert np.array_equal(chart.candles["high"], groups["high"].max(axis=1))
    assert np.array_equal(chart.candles["low"], groups["low"].min(axis=1))
    assert np.array_equal(chart.candles["close"], groups["close"][:, -1])
    assert np.allclose(chart.candles["volume"], groups["volume"].sum(axis=1))
    forming = chart.forming()
    tail = bars[100:]
    assert forming == [float(tail["time"][0]), tail["open"][0], tail["high"].max(),
                       tail["low"].min(), tail["close"][-1], pytest.approx(tail["volume"].sum())]
    # The strategy's declared sma(3), over the 5 s closes.
    closes = groups["close"][:, -1]
    sma = np.convolve(closes, np.ones(3) / 3, mode="valid")
    page = chart.payload(0, 20)
    assert page["total"] == 20
    values = np.array(page["lines"]["sma(3)"])
    assert np.array_equal(values[:, 0], groups["time"][2:, 0])
    assert np.allclose(values[:, 1], sma, rtol=0, atol=1e-9)


def test_board_rows_reach_the_dashboard(run, caplog):
    _, board, source = run
    caplog.set_level(logging.INFO, logger="strategy")  # as `engine run` logs by default
    logging.getLogger("strategy.Demo").info("bought %d", 3)
    board.push(RunStatus(t=2.0, quotes=7, ticks=9, bars=1, rejected=0, quotes_per_s=3.5,
                         status={"aaa": "stale"}, reconnects=1))
    source.poll()
    assert [(r["strategy"], r["message"]) for r in source.logs] == [("Demo", "bought 3")]
    health = source.health(now=0.0)
    assert health["quotes"] == 7
    assert health["status"] == {"aaa": "stale"}
    assert health["reconnects"] == 1
    assert health["alive"]


@pytest.mark.parametrize("n", [10, 3000, 3001, 10_007])
def test_result_price_bars_merge_as_the_report_does(n):
    from engine.backtests.report import candles
    from engine.ui._app import _price_bars

    b = _bars(n, 1_600_000_000, seed=n)
    mine = np.array(_price_bars({"x": b})["x"])
    ref, _ = candles(b)
    assert np.array_equal(mine[:, 0], ref["time"] / 1000.0)
    for i, f in enumerate(("open", "high", "low", "close"), start=1):
        assert np.array_equal(mine[:, i], ref[f]), f


def test_run_files_of_killed_runs_are_swept(run, tmp_path):
    import subprocess
    import sys

    _, board, _ = run
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = board.path.with_name(f"{gone.stdout.strip()}.json")
    dead.write_text(board.path.read_text().replace(f'"pid":{os.getpid()}',
                                                   f'"pid":{gone.stdout.strip()}'))
    (board.path.parent / "notes.json").write_text("not a run file")
    assert [i.pid for i in running_engines()] == [os.getpid()]
    assert not dead.exists()  # a run killed outright leaves its file: swept on the next look
    assert (board.path.parent / "notes.json").exists()  # not ours to remove
    (board.path.parent / "notes.json").unlink()
