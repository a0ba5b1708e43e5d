"""A backtest makes the collector's young collections rarer while it replays (they find no
cycle in the replay's short-lived tuples), and gives the thresholds back afterwards: after a
normal run, after a strategy raised, and with runs overlapping in threads."""

from __future__ import annotations

import gc
import threading

import pytest

from engine import Strategy
from engine.backtests.replay import BacktestError, run_backtest
from tests.backtests.bars import walk


class Watch(Strategy):
    symbols = ("x",)
    fail_at: int = -1

    def on_start(self) -> None:
        self.seen = gc.get_threshold()
        self.bars = 0

    def on_bar(self, symbol: str) -> None:
        self.bars += 1
        if self.bars == self.fail_at:
            raise RuntimeError("broke")


@pytest.fixture
def threshold():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_rarer_collections_during_the_run_and_the_thresholds_back_after(threshold):
    strat = Watch()
    run_backtest(strat, walk(50, 1))
    assert strat.seen[0] >= 50_000
    assert strat.seen[1:] == (10, 10)
    assert gc.get_threshold() == (700, 10, 10)
    with pytest.raises(BacktestError, match="broke"):
        run_backtest(Watch, walk(50, 1), params={"fail_at": 5})
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_runs_in_threads_give_the_thresholds_back_once(threshold):
    inside = threading.Barrier(2)

    class Meet(Watch):
        def on_start(self) -> None:
            super().on_start()
            inside.wait(30)  # both runs are replaying at once

    errors = []

    def one():
        try:
            run_backtest(Meet(), walk(200, 2))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert gc.get_threshold() == (700, 10, 10)


def test_a_run_s_memory_goes_with_its_result_without_a_collection():
    # Nothing the run made holds itself in a cycle (the context and its indicators, trio's
    # runner and the replay's results): dropping the result frees it all by reference counts.
    from strategies.sma_cross import SmaCross

    kinds = ("Context", "_Source", "Line", "PaperBroker", "Account", "FillLog", "HeldBars")

    def alive():
        return sorted(type(o).__name__ for o in gc.get_objects()
                      if type(o).__name__ in kinds and type(o).__module__.startswith("engine."))

    gc.collect()
    before = alive()
    gc.disable()
    try:
        result = run_backtest(SmaCross, {"x": walk(3000, 3)},
                              params={"fast": 3, "slow": 9, "log_bars": False})
        assert len(result.fills) > 50
        del result
        assert alive() == before
    finally:
        gc.enable()
