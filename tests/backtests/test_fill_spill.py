"""A run's fills past its bound (`fills_in_memory`) spill to Parquet: the results are the same
as a run that kept them all, memory holds fewer rows than the bound, the files go with the
results or the process, a killed process's files go with the next spill, and a bad bound or a
damaged file is one clear error."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Strategy
from engine.backtests._spill import PREFIX, SpillError
from engine.backtests.records import FillLog
from engine.backtests.replay import BacktestError, run_backtest
from engine.clearing.account import FillRecord
from tests.backtests.bars import walk

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def spill_root(tmp_path, monkeypatch):
    """Spill directories go to this test's own directory (as TMPDIR would send them)."""
    root = tmp_path / "spill"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


class Flip(Strategy):
    """A market order every bar, alternately buying and selling, and now and then a limit
    order a little under the close (maker fills, trades of several lots)."""

    def on_bar(self, symbol):
        i = len(self.ctx.ohlcv(symbol))
        size = 1 + i % 3
        self.ctx.buy(symbol, size) if i % 2 else self.ctx.sell(symbol, size)
        if i % 5 == 0:
            self.ctx.buy(symbol, 1, limit=self.ctx.ohlcv(symbol)["close"][-1] * 0.999)


class FlipHeard(Flip):
    """The same orders, with `on_fill`: its fills reach the log one event at a time."""

    def on_fill(self, event):
        self.heard = getattr(self, "heard", 0) + 1


DATA = {"a": walk(1200, 1), "b": walk(1200, 2)}


@pytest.mark.parametrize("cls", [Flip, FlipHeard])
def test_a_run_whose_fills_spill_gives_the_results_of_one_that_kept_them(cls):
    kept = run_backtest(cls(), DATA, fills_in_memory=None, close_at_end=True, commission=0.001)
    spilled = run_backtest(cls(), DATA, fills_in_memory=100, close_at_end=True,
                           commission=0.001)
    log = spilled.fills._items
    assert len(log.spilled) > 10
    assert all(p.exists() for p in log.spilled)
    assert len(log) == len(kept.fills) > 2000
    assert spilled.stats == kept.stats
    assert spilled.trades == kept.trades
    assert spilled.to_json() == kept.to_json()
    pd.testing.assert_frame_equal(spilled.fills_df(), kept.fills_df())
    pd.testing.assert_frame_equal(spilled.orders_df(), kept.orders_df())
    assert [spilled.fills[i] for i in (0, 7, 1500, -1)] == [kept.fills[i] for i in
                                                            (0, 7, 1500, -1)]
    assert list(spilled.fills) == list(kept.fills)


def fills(n: int, start: int = 0) -> list[FillRecord]:
    return [FillRecord(1e9 + i, i + 1, f"o{i // 2}", "ab"[i % 3 == 0], "buy" if i % 2 else
                       "sell", 100.0 + i / 7, 1.0 + i % 4, 0.01 * i, "maker" if i % 5 else
                       "taker", float(i % 2)) for i in range(start, start + n)]


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bound=st.integers(1, 40), batches=st.lists(st.integers(0, 60), max_size=6))
def test_a_bounded_log_reads_as_an_unbounded_one_and_holds_fewer_rows_than_its_bound(
        bound, batches):
    small, full = FillLog(["a"], bound), FillLog(["a"], None)
    done = 0
    for k, size in enumerate(batches):
        batch = fills(size, done)
        small.add(k, batch)
        full.add(k, batch)
        done += size
        assert small._m < bound  # rows in memory
        assert len(small._buf) <= bound  # rows allocated
    assert len(small) == len(full) == done
    assert small.rows.tobytes() == full.rows.tobytes()
    assert small.client_ids == full.client_ids
    assert small.symbols == full.symbols
    assert list(small) == list(full)
    assert [small.record(i) for i in range(-done, done)] == [full.record(i)
                                                            for i in range(-done, done)]
    with pytest.raises(IndexError, match=f"fill {done} of {done}"):
        small.record(done)


def test_the_files_go_when_the_results_holding_them_are_collected(spill_root):
    result = run_backtest(Flip(), DATA["a"], symbols=["a"], fills_in_memory=64)
    where = result.fills._items.spilled[0].parent
    assert where.parent == spill_root
    assert where.name.startswith(f"{PREFIX}{os.getpid()}_")
    del result
    gc.collect()
    assert not where.exists()
    assert list(spill_root.iterdir()) == []


# A child process that spills fills, says where, then exits when told or waits to be killed.
CHILD = """
import sys
from engine.backtests.records import FillLog
from engine.clearing.account import FillRecord

log = FillLog(["a"], 10)
log.add(0, [FillRecord(1e9 + i, i + 1, "o", "a", "buy", 100.0, 1.0, 0.0, "taker", 0.0)
            for i in range(50)])
print(log.spilled[0].parent, flush=True)
sys.stdin.readline()
"""


@contextmanager
def child(root: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A child process that spilled fills to a directory in `root`, and that directory."""
    env = {**os.environ, "TMPDIR": str(root), "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) as proc:
        try:
            yield proc, Path(proc.stdout.readline().strip())
        finally:
            proc.kill()


def test_the_files_go_when_the_process_exits_with_its_results_alive(spill_root):
    with child(spill_root) as (proc, where):
        assert where.parent == spill_root
        assert len(list(where.iterdir())) == 9  # 50 rows at most 10 in memory: 9 parts of 5
        proc.communicate("\n", timeout=60)
        assert proc.returncode == 0
    assert not where.exists()


def test_the_next_spill_removes_the_files_of_a_killed_process_and_leaves_the_living(
        spill_root):
    with child(spill_root) as (killed, dead), child(spill_root) as (_, alive):
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        assert dead.is_dir()  # nothing cleans up after a kill -9 ...
        assert alive.is_dir()
        log = FillLog(["a"], 2)
        log.add(0, fills(2))  # ... until the next spill
        mine = log.spilled[0].parent
        assert sorted(spill_root.iterdir()) == sorted([alive, mine])


@pytest.mark.parametrize("bound", [0, -5, 2.5, True, "many"])
def test_a_bound_that_is_not_a_positive_number_of_rows_is_one_clear_error(bound):
    with pytest.raises(BacktestError, match=r"^fills_in_memory is the most fills a run keeps "
                                            r"in memory, a whole number of rows of at least 1 "
                                            r"\(None: never spill\), got "):
        run_backtest(Flip(), DATA["a"], symbols=["a"], fills_in_memory=bound)
    with pytest.raises(ValueError, match="a fill log's bound is a number of rows of at least 1"):
        FillLog(["a"], bound)


def spilled_log() -> FillLog:
    log = FillLog(["a", "b"], 10)
    log.add(0, fills(40))
    assert len(log.spilled) == 7
    return log


def test_a_damaged_spill_file_is_one_error_naming_it():
    log = spilled_log()
    bad = log.spilled[3]
    bad.write_bytes(b"PAR1 not a parquet file PAR1")
    for read in (lambda: log.rows, lambda: list(log), lambda: log.record(16),
                 lambda: log.client_ids):
        with pytest.raises(SpillError, match=f"^{bad}: spilled fills cannot be read back") as e:
            read()
        assert "\n" not in str(e.value)
    assert log.record(0) == fills(1)[0]  # the sound parts still read


def test_a_missing_spill_file_is_one_error_naming_it():
    log = spilled_log()
    gone = log.spilled[0]
    gone.unlink()
    with pytest.raises(SpillError, match=f"^{gone}: spilled fills are missing"):
        log.rows  # noqa: B018


def test_a_spill_file_of_other_rows_is_one_error_naming_it():
    log = spilled_log()
    other = FillLog(["a"], 4)
    other.add(0, fills(4))  # spills one part of 2 rows
    replaced = log.spilled[1]
    replaced.write_bytes(other.spilled[0].read_bytes())
    with pytest.raises(SpillError, match=f"^{replaced}: spilled fills hold 2 rows, 5 were "
                                         "written"):
        log.rows  # noqa: B018
    foreign = log.spilled[4]
    pq.write_table(pa.table({"step": [1, 2, 3, 4, 5]}), foreign)
    with pytest.raises(SpillError, match=f"^{foreign}: not spilled fills \\(no column time, "
                                         "fill_id, "):
        log.record(20)  # in the fifth part


def test_a_temporary_directory_that_cannot_take_the_files_is_one_error_and_loses_no_fill(
        spill_root, monkeypatch):
    nowhere = spill_root / "gone"
    monkeypatch.setattr(tempfile, "tempdir", str(nowhere))
    log = FillLog(["a"], 4)
    with pytest.raises(SpillError, match=f"^cannot make a directory for spilled fills in "
                                         f"{nowhere}: "):
        log.add(0, fills(6))
    assert log.spilled == []
    assert list(log) == fills(6)
