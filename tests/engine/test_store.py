"""The history store: merges without duplicates or holes, atomic writes, clear errors naming the
file, the `engine backfill` and `engine data` commands, CSV import and tick recording."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine import _parquet
from engine.dtypes import ohlc_dtype, tick_dtype
from engine.store import (
    StoreError,
    TickRecorder,
    backfill_async,
    dataset_path,
    import_file,
    list_datasets,
    list_tick_datasets,
    load_bars,
    load_ticks,
    save_bars,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_006_400  # 2023-11-15 00:00:00 UTC: a whole day, hour and minute


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Every test gets its own data directory: never the user's."""
    path = tmp_path / "home"
    monkeypatch.setenv("ENGINE_HOME", str(path))
    return path


@pytest.fixture
def sim_reset():
    import providers.sim as sim

    yield sim
    sim.reset()


def bars(start: int, n: int, step: int = 1, price: float = 100.0) -> np.ndarray:
    out = np.zeros(n, dtype=ohlc_dtype)
    out["time"] = start + step * np.arange(n)
    out["open"] = out["close"] = out["bar_wap"] = price + np.arange(n) * 0.01
    out["high"] = out["close"] + 1
    out["low"] = out["close"] - 1
    out["volume"] = 1.0
    out["count"] = 1
    return out


def engine(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT,
                          env=dict(os.environ, ENGINE_HOME=str(home), **env))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `engine ARGS` in this process (fast); return exit status, stdout and stderr."""
    from engine.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return int(code or 0), out.out, out.err


# -- merging --------------------------------------------------------------------------------------


def test_overlapping_saves_merge_without_duplicates_or_holes():
    first = save_bars("sim", "btcusd", 1, bars(T0, 1000, price=100))
    assert (first.rows, first.added, first.first, first.last) == (1000, 1000, T0, T0 + 999)
    newer = save_bars("providers.sim", "btcusd", "1s", bars(T0 + 500, 1000, price=200))
    assert (newer.rows, newer.added) == (1500, 500)
    older = save_bars("sim", "btcusd", 1, bars(T0 - 300, 400, price=300))
    assert (older.rows, older.added, older.first) == (1800, 300, T0 - 300)

    got = load_bars("sim", "btcusd", 1)
    assert len(got) == 1800
    assert (np.diff(got["time"]) == 1).all()  # sorted, no duplicate, no hole
    assert got.dtype == ohlc_dtype
    assert (got["index"] == np.arange(1800)).all()
    # The newest save wins where saves overlap.
    at = {int(t): c for t, c in zip(got["time"], got["close"], strict=True)}
    assert at[T0 - 300] == 300
    assert at[T0 + 99] == pytest.approx(303.99)
    assert at[T0 + 100] == pytest.approx(101.0)
    assert at[T0 + 500] == 200
    assert at[T0 + 1499] == pytest.approx(209.99)
    # Saving what is stored again changes nothing.
    assert save_bars("sim", "btcusd", 1, got).added == 0
    assert len(load_bars("sim", "btcusd", 1)) == 1800


def test_a_batch_with_repeated_times_keeps_its_last_row():
    rows = np.concatenate([bars(T0, 3, price=1), bars(T0 + 1, 1, price=9)])
    save_bars("sim", "x", 1, rows)
    got = load_bars("sim", "x", 1)
    assert list(got["time"]) == [T0, T0 + 1, T0 + 2]
    assert got["close"][1] == 9


def test_load_filters_by_time_and_resamples_from_a_finer_dataset():
    save_bars("sim", "btcusd", 1, bars(T0 + 30, 300))  # from half a minute into the first minute
    assert list(load_bars("sim", "btcusd", 1, start=T0 + 100, end=T0 + 103)["time"]) == [
        T0 + 100, T0 + 101, T0 + 102]
    minute = load_bars("sim", "btcusd", "1m")
    # T0..T0+59 is covered only from T0+30 and T0+300.. only to T0+329: both left out.
    assert list(minute["time"]) == [T0 + 60, T0 + 120, T0 + 180, T0 + 240]
    one = minute[0]
    src = load_bars("sim", "btcusd", 1, start=T0 + 60, end=T0 + 120)
    assert one["open"] == src["open"][0]
    assert one["close"] == src["close"][-1]
    assert one["high"] == src["high"].max()
    assert one["volume"] == src["volume"].sum()
    assert len(load_bars("sim", "btcusd", "7s")) == 42  # any multiple of a stored period
    save_bars("sim", "ethusd", "1m", bars(T0, 10, step=60))
    with pytest.raises(StoreError, match=r"no 90s bars stored for sim/ethusd \(stored: 1m\)"):
        load_bars("sim", "ethusd", "90s")
    with pytest.raises(StoreError, match=r"no 1m bars stored for sim/nope \(stored: nothing\)"):
        load_bars("sim", "nope", "1m")


def test_names_are_encoded_and_kept_in_the_metadata():
    info = save_bars("kraken", "BTC/USD", "1m", bars(T0, 3, step=60))
    assert info.path == dataset_path("kraken", "BTC/USD", 60)
    assert info.path.parent.name == "BTC%2FUSD"
    assert info.path.name == "1m.parquet"
    save_bars("csvfile", "data/GOOG.csv.gz", "1d", bars(T0 - T0 % 86400, 2, step=86400))
    listed = {(i.provider, i.symbol, i.timeframe_text, i.rows) for i in list_datasets()}
    assert listed == {("kraken", "BTC/USD", "1m", 3), ("csvfile", "GOOG", "1d", 2)}
    with pytest.raises(StoreError, match="bad symbol name"):
        save_bars("sim", "", 1, bars(T0, 1))


# -- atomic writes --------------------------------------------------------------------------------


def test_an_interrupted_save_leaves_the_stored_file_intact(monkeypatch):
    save_bars("sim", "btcusd", 1, bars(T0, 100))
    path = dataset_path("sim", "btcusd", 1)
    before = path.read_bytes()

    def half_then_interrupt(table, f):
        f.write(b"PAR1" + b"\0" * 1000)  # a torn write: no footer
        raise KeyboardInterrupt

    monkeypatch.setattr(_parquet, "_dump", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_bars("sim", "btcusd", 1, bars(T0 + 50, 100))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []
    assert len(load_bars("sim", "btcusd", 1)) == 100


def test_a_backfill_killed_mid_write_leaves_the_stored_file_intact(home):
    save_bars("sim", "btcusd", 1, bars(T0, 100))
    path = dataset_path("sim", "btcusd", 1)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from engine import _parquet, store

        def write_then_die(table, f):
            f.write(b"PAR1" + b"x" * 4096)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        _parquet._dump = write_then_die
        rows = np.zeros(5000, dtype=store.ohlc_dtype)
        rows["time"] = {T0} + np.arange(5000)
        store.save_bars("sim", "btcusd", 1, rows)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60,
                         env=dict(os.environ, ENGINE_HOME=str(home)), capture_output=True)
    assert out.returncode == -9, out.stderr
    assert path.read_bytes() == before
    stale = [p for p in path.parent.iterdir() if ".tmp-" in p.name]
    assert len(stale) == 1  # what the dead process left: ignored by readers
    assert [(i.symbol, i.rows) for i in list_datasets()] == [("btcusd", 100)]
    # The next save merges into the intact file and clears the dead writer's temporary.
    assert save_bars("sim", "btcusd", 1, bars(T0 + 100, 10)).rows == 110
    assert not stale[0].exists()


# -- corrupt files --------------------------------------------------------------------------------


def test_a_corrupt_parquet_file_gets_an_error_naming_it(capsys):
    save_bars("sim", "ethusd", 1, bars(T0, 10))
    save_bars("sim", "btcusd", 1, bars(T0, 10))
    path = dataset_path("sim", "btcusd", 1)
    path.write_bytes(path.read_bytes()[:-40])  # footer cut off
    for call in (lambda: load_bars("sim", "btcusd", 1), lambda: list_datasets(),
                 lambda: save_bars("sim", "btcusd", 1, bars(T0, 10))):
        with pytest.raises(StoreError, match=f"{path}: cannot be read as Parquet"):
            call()
    assert path.stat().st_size > 0  # never overwritten on a failed read

    code, out, err = cli(capsys, "data", "list")
    assert code == 1
    assert "ethusd" in out  # the readable datasets are still listed
    assert f"engine data: error: {path}: cannot be read as Parquet" in err


def test_a_parquet_file_of_something_else_is_named():
    import pyarrow.parquet as pq

    path = dataset_path("sim", "btcusd", 1)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2]}), path)
    with pytest.raises(StoreError, match=f"{path}: is not a bar dataset"):
        load_bars("sim", "btcusd", 1)


# -- backfill and the command line ----------------------------------------------------------------


async def test_backfills_of_the_sim_merge_into_one_gapless_dataset(sim_reset):
    opts = {"start_time": str(T0)}
    two = (await backfill_async("providers.sim", ["btcusd"], None, 2, opts))[0]
    assert (two.provider, two.symbol, two.timeframe, two.rows) == ("sim", "btcusd", 1, 2000)
    assert two.last == T0 - 1  # history ends at the anchor
    three = (await backfill_async("sim", ["btcusd"], None, 3, opts))[0]
    assert (three.rows, three.added) == (3000, 1000)
    got = load_bars("sim", "btcusd", 1)
    assert (np.diff(got["time"]) == 1).all()
    # A later anchor adds the newer bars after the stored ones.
    later = (await backfill_async("sim", ["btcusd"], None, 1, {"start_time": str(T0 + 600)}))[0]
    assert (later.rows, later.last) == (3600, T0 + 599)
    assert (np.diff(load_bars("sim", "btcusd", 1)["time"]) == 1).all()

    minute = (await backfill_async("sim", ["ethusd"], "1m", 2, opts))[0]
    assert (minute.timeframe, minute.rows, minute.last) == (60, 33, T0 - 60)
    with pytest.raises(StoreError, match="backfill of 'zzzusd' failed"):
        await backfill_async("sim", ["zzzusd"], None, 1, opts)
    with pytest.raises(StoreError, match="bad option"):
        await backfill_async("sim", ["btcusd"], None, 1, {"nope": "1"})


def test_engine_backfill_then_data_list(home, capsys, sim_reset):
    out = engine("backfill", "providers.sim", "btcusd", "--count", "2", home=home,
                 ENGINE_SIM_START_TIME=str(T0))
    assert out.returncode == 0, out.stderr
    assert "sim/btcusd 1s: +2000 bars, 2000 stored 2023-11-14 23:26:40 .. 2023-11-14 23:59:59" \
        in out.stdout
    listed = engine("data", "list", home=home)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["provider", "symbol", "timeframe", "first", "last", "rows"]
    assert lines[1].split() == ["sim", "btcusd", "1s", "2023-11-14", "23:26:40", "2023-11-14",
                                "23:59:59", "2000"]
    code, stdout, _ = cli(capsys, "data", "list", "--json")
    assert code == 0
    assert json.loads(stdout) == [
        {"provider": "sim", "symbol": "btcusd", "kind": "bars", "timeframe": "1s", "seconds": 1,
         "first": T0 - 2000, "last": T0 - 1, "rows": 2000,
         "path": str(home / "history" / "sim" / "btcusd" / "1s.parquet")}]
    code, _, err = cli(capsys, "backfill", "sim", "zzzusd", "--count", "1")
    assert code == 1
    assert "backfill of 'zzzusd' failed" in err
    code, _, err = cli(capsys, "backfill", "sim", "btcusd", "--timeframe", "7x")
    assert code == 2
    assert "--timeframe: bad timeframe '7x'" in err
    code, _, err = cli(capsys, "backfill", "sim", "btcusd", "--count", "0")
    assert code == 2
    assert "--count must be at least 1" in err


# -- CSV import -----------------------------------------------------------------------------------


def write_csv(path: Path, n: int, start: int = T0, step: int = 60) -> None:
    lines = ["Date,Open,High,Low,Close,Volume"]
    for i in range(n):
        p = 100 + i
        lines.append(f"{start + i * step},{p},{p + 2},{p - 1},{p + 1},{10 * i}")
    path.write_text("\n".join(lines) + "\n")


def test_csv_files_import_and_merge(tmp_path, capsys):
    a, b = tmp_path / "a" / "EURUSD.csv", tmp_path / "b" / "EURUSD.csv"
    a.parent.mkdir(), b.parent.mkdir()
    write_csv(a, 100)
    write_csv(b, 100, start=T0 + 50 * 60)
    assert import_file(a).rows == 100
    info = import_file(b)
    assert (info.provider, info.symbol, info.timeframe, info.rows, info.added) == (
        "csvfile", "EURUSD", 60, 150, 50)
    got = load_bars("csvfile", "EURUSD", "1m")
    assert (np.diff(got["time"]) == 60).all()
    assert got["close"][0] == 101
    hourly = import_file(a, symbol="eur_h", timeframe="1h")
    assert hourly.timeframe == 3600
    assert hourly.symbol == "eur_h"

    with pytest.raises(StoreError, match="bars of 1m cannot make 90s bars"):
        import_file(a, timeframe="90s")
    code, out, err = cli(capsys, "data", "import", str(b), "--symbol", "viacli")
    assert code == 0, err
    assert "csvfile/viacli 1m: +100 bars" in out


def test_a_malformed_csv_gets_an_error_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "BAD.csv"
    write_csv(path, 10)
    text = path.read_text().splitlines()
    text[5] = f"{T0 + 4 * 60},abc,1,1,1,1"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(StoreError, match=rf"{path}:6: column 'Open': 'abc' is not a number"):
        import_file(path)
    code, _, err = cli(capsys, "data", "import", str(path))
    assert code == 1
    assert f"engine data: error: {path}:6: column 'Open'" in err
    code, _, err = cli(capsys, "data", "import", str(tmp_path / "none.csv"))
    assert code == 1
    assert "none.csv: no such file" in err
    assert list_datasets() == []


# -- ticks ----------------------------------------------------------------------------------------


def ticks(times, sym: int, price: float = 1.0) -> np.ndarray:
    rows = np.zeros(len(times), dtype=tick_dtype)
    rows["time"] = times
    rows["price"] = price + np.arange(len(times))
    rows["size"] = 0.5
    rows["sym"] = sym
    rows["type"] = np.arange(len(times)) % 3
    return rows


def test_recorded_ticks_round_trip_across_days_and_flushes():
    day_end = (T0 // 86400 + 1) * 86400
    a = ticks(day_end - 5 + np.arange(10) * 1.0, 0, price=10)  # five today, five tomorrow
    b = ticks(day_end - 2 + np.arange(4) * 0.5, 1, price=20)
    with TickRecorder("providers.sim", ["btcusd", "BTC/USD"], flush_rows=6) as rec:
        rec.add(a[:4])
        rec.add(np.concatenate([b[:2], a[4:7]]))  # 9 rows >= 6: written as parts
        rec.flush()
        parts = sorted(p.name for p in Path(rec.dirs[0]).iterdir())
        assert any(".part-" in p for p in parts)
        # Parts are readable before the recorder closes: a crash loses only what is buffered.
        assert len(load_ticks("sim", "btcusd")) == 7
        rec.add(np.concatenate([a[7:], b[2:]]))
    names = sorted(p.name for p in Path(rec.dirs[0]).iterdir() if not p.name.startswith("."))
    day = str(np.datetime64(T0 // 86400, "D"))
    assert names == [f"{day}.parquet", f"{np.datetime64(T0 // 86400 + 1, 'D')}.parquet"]

    got = load_ticks("sim", "btcusd")
    assert got.dtype == tick_dtype
    for field in ("time", "price", "size", "type"):
        assert (got[field] == a[field]).all()
    assert (got["sym"] == 0).all()
    assert (load_ticks("sim", "BTC/USD")["price"] == b["price"]).all()
    window = load_ticks("sim", "btcusd", start=day_end - 1, end=day_end + 2)
    assert list(window["time"]) == [day_end - 1, day_end, day_end + 1]
    listed = {(i.symbol, i.kind, i.rows, i.first) for i in list_tick_datasets()}
    assert listed == {("btcusd", "ticks", 10, day_end - 5), ("BTC/USD", "ticks", 4, day_end - 2)}


def test_a_second_recorder_folds_in_the_parts_of_one_that_crashed():
    crashed = TickRecorder("sim", ["btcusd"])
    crashed.add(ticks(T0 + np.arange(3.0), 0))
    crashed.flush()  # parts on disk; never closed, as after kill -9
    with TickRecorder("sim", ["btcusd"]) as rec:
        rec.add(ticks(T0 + 10 + np.arange(2.0), 0))
    files = sorted(p.name for p in Path(rec.dirs[0]).iterdir() if not p.name.startswith("."))
    assert len(files) == 1
    assert ".part-" not in files[0]
    assert list(load_ticks("sim", "btcusd")["time"]) == [T0, T0 + 1, T0 + 2, T0 + 10, T0 + 11]


async def test_a_recorder_attached_to_a_live_feed_keeps_every_tick(autojump_clock, sim_reset):
    from engine import LiveClock
    from engine.feed import open_feed

    sim_reset.configure(start_time=T0, tick_rate=500)
    async with open_feed("providers.sim", ["btcusd", "ethusd"], history=0,
                         tick_rows=4096, clock=LiveClock(T0)) as feed:
        # A tiny tick buffer rolls many times: the recorder copies each batch before it does.
        rec = TickRecorder("providers.sim", feed.symbols, flush_rows=1000).attach(feed)
        import trio

        await trio.sleep(10)
        seen = feed.ticks.array.copy()
        total = feed.stats.ticks
    infos = rec.close()  # after the feed closed, as with run_live(on_feed=rec.attach)
    assert rec.dropped == 0
    assert total > 2 * 4096
    got = {s: load_ticks("sim", s) for s in ("btcusd", "ethusd")}
    assert sum(len(g) for g in got.values()) == total == sum(i.rows for i in infos)
    newest = seen[seen["sym"] == 1][-5:]
    assert (got["ethusd"]["price"][-5:] == newest["price"]).all()


async def test_record_ticks_flushes_while_running_and_folds_on_cancel(autojump_clock, sim_reset):
    import functools

    import trio

    from engine import LiveClock
    from engine.feed import open_feed
    from engine.store import record_ticks

    sim_reset.configure(start_time=T0, tick_rate=100)
    async with open_feed("sim", ["btcusd"], history=0, clock=LiveClock(T0)) as feed:
        async with trio.open_nursery() as nursery:
            rec = await nursery.start(functools.partial(record_ticks, feed, flush_every=2.0))
            await trio.sleep(5)
            await trio.to_thread.run_sync(rec.flush)  # let the worker finish what it started
            parts = [p for p in rec.dirs[0].iterdir() if ".part-" in p.name]
            assert parts
            assert len(load_ticks("sim", "btcusd")) > 0
            nursery.cancel_scope.cancel()
    # Everything the feed pushed until the recorder let go of it (the feed runs on meanwhile).
    assert [p.name for p in rec.dirs[0].iterdir() if ".part-" in p.name] == []
    assert len(load_ticks("sim", "btcusd")) == rec.rows > 0
    assert rec.dropped == 0
