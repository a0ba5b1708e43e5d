"""The csvfile provider reads every layout of the shared data and of common exports, names the
file and line of a malformed row, backfills within the buffer and replays bars as paced quotes."""

from __future__ import annotations

import csv
import gzip
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trio

import providers.csvfile as csvfile
from engine.check_provider import check_provider
from engine.datafiles import load
from engine.dtypes import ohlc_dtype
from engine.shm import ShmArray, tick_dtype
from providers.csvfile import MalformedFileError, SymbolNotFoundError

SHARED_FILES = {  # name: (bars, first bar's open time in epoch s)
    "GOOG": (2148, 1092873600),  # 2004-08-19, unnamed date index
    "EURUSD": (5000, 1492592400),  # 2017-04-19 09:00, unnamed datetime index
    "BTCUSD": (156, 1327968000),  # 2012-01-31, monthly
    "ORCL": (5036, 789091200),  # 1995-01-03, Date ... Adj Close, Volume
    "NVDA": (4012, 916963200),  # 1999-01-22
    "STOXX50-2006": (255, 1136160000),  # 2006-01-02, Volume and OpenInterest all 0
}
T0 = 1_704_067_200  # 2024-01-01 00:00 UTC


@pytest.fixture(autouse=True)
def fresh_options(monkeypatch, tmp_path):
    """Every test starts from the default options, reading tmp_path."""
    monkeypatch.delenv("ENGINE_CSV_DIR", raising=False)
    csvfile.configure(data_dir=tmp_path, speed=None, timezone=None)
    yield
    csvfile.configure(data_dir=None, speed=None, timezone=None)


@pytest.fixture
def tick_shm():
    with ShmArray.create(tick_dtype, 1024, start=0) as shm:
        yield shm


def write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"))
    return path


def minute_bars(path: Path, n: int, t0: int = T0, step: int = 60) -> Path:
    """n bars, one every `step` s, close rising by 1 a bar, as an epoch-seconds CSV."""
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(n):
        o = 100.0 + i
        lines.append(f"{t0 + i * step},{o},{o + 1.5},{o - 0.5},{o + 1},{4 * (i + 1)}")
    return write(path, "\n".join(lines) + "\n")


def reference_bars(path: Path) -> np.ndarray:
    """An independent slow parse of the shared files: csv module plus datetime."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [h.lower() for h in rows[0]]
    col = {name: header.index(name) for name in ("open", "high", "low", "close", "volume")}
    out = np.zeros(len(rows) - 1, dtype=ohlc_dtype)
    for i, row in enumerate(rows[1:]):
        out[i]["time"] = datetime.fromisoformat(row[0]).replace(tzinfo=UTC).timestamp()
        for name, j in col.items():
            out[i][name] = float(row[j])
    return out


async def backfill(sym: str, size: int = 20_000, count: int = 10, start: int | None = None):
    with ShmArray.create(ohlc_dtype, size, start=start) as shm:
        async with trio.open_nursery() as nursery:
            await nursery.start(csvfile.backfill_bars, sym, shm, count)
        return shm.array.copy(), shm.first, shm.last


# -- layouts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHARED_FILES))
async def test_each_shared_layout_backfills_like_an_independent_parse(shared_data, name):
    csvfile.configure(data_dir=shared_data)
    n, first_time = SHARED_FILES[name]
    rows, _, _ = await backfill(name.lower())
    ref = reference_bars(shared_data / f"{name}.csv")
    assert len(rows) == len(ref) == n
    assert rows["time"][0] == first_time
    for field in ("time", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(rows[field], ref[field], err_msg=field)
    assert (rows["count"] == 0).all()
    assert np.all((rows["low"] <= rows["bar_wap"]) & (rows["bar_wap"] <= rows["high"]))
    np.testing.assert_array_equal(np.diff(rows["index"]), 1)


async def test_adj_close_is_ignored(shared_data):
    csvfile.configure(data_dir=shared_data)
    rows, _, _ = await backfill("ORCL")
    assert rows["close"][0] == 2.117284  # the file's Close; its Adj Close is 1.883304


def test_symbol_info_and_search_on_shared_data(shared_data):
    csvfile.configure(data_dir=shared_data)
    found = csvfile.search_symbols("")
    assert set(SHARED_FILES) <= set(found)
    assert found[: len(SHARED_FILES)] == sorted(SHARED_FILES, key=str.lower)  # data_dir first
    assert csvfile.search_symbols("usd") == ["BTCUSD", "EURUSD"]
    assert csvfile.search_symbols("*50*") == ["STOXX50-2006"]
    info = csvfile.symbol_info("eurusd")
    assert info["symbol"] == "eurusd"
    assert info["path"].endswith("EURUSD.csv")
    assert (info["bars"], info["period"], info["tick_size"]) == (5000, 3600, 1e-5)
    assert csvfile.symbol_info("GOOG")["period"] == 86400


@pytest.mark.parametrize(
    ("filename", "text", "times"),
    [
        pytest.param(
            "mixed.csv",
            """
DATE,oPeN,HIGH,low,Close,VOLUME
2024-01-02 09:30:00,10,11,9,10.5,100
2024-01-02T09:31:15,10.5,11,10,10.75,200
""",
            [T0 + 86400 + 9 * 3600 + 1800, T0 + 86400 + 9 * 3600 + 1875],
            id="mixed-case-datetime",
        ),
        pytest.param(
            "epoch_ms.csv",
            f"""
Timestamp,Open,High,Low,Close,Volume
{T0 * 1000},10,11,9,10.5,100
{T0 * 1000 + 60_000},10.5,11,10,10.75,200
""",
            [T0, T0 + 60],
            id="epoch-ms",
        ),
        pytest.param(
            "semicolon.csv",
            """
Date;Time;Open;High;Low;Close
2024.01.02;09:00;10;11;9;10.5
2024.01.02;10:00;10.5;11;10;10.75
""",
            [T0 + 86400 + 9 * 3600, T0 + 86400 + 10 * 3600],
            id="date-and-time-columns-no-volume",
        ),
        pytest.param(
            "offsets.csv",
            """
datetime,open,high,low,close,volume
2024-01-01T02:00:00+02:00,10,11,9,10.5,1
2024-01-01T01:00:00Z,10,11,9,10.5,1
""",
            [T0, T0 + 3600],
            id="utc-offsets",
        ),
        pytest.param(
            "newest_first.csv",
            """
,Open,High,Low,Close,Volume
2024-01-03,10,11,9,10.5,1
2024-01-02,10,11,9,10.5,1
2024-01-01,10,11,9,10.5,1
""",
            [T0, T0 + 86400, T0 + 2 * 86400],
            id="newest-first-is-reversed",
        ),
    ],
)
async def test_generated_csv_layouts(tmp_path, filename, text, times):
    write(tmp_path / filename, text)
    rows, _, _ = await backfill(filename)
    assert rows["time"].tolist() == times
    if "volume" not in text.lower():
        assert (rows["volume"] == 0).all()


async def test_gzip_and_parquet_read_like_csv(tmp_path):
    src = minute_bars(tmp_path / "plain.csv", 50)
    with gzip.open(tmp_path / "zipped.csv.gz", "wt") as f:
        f.write(src.read_text())
    times = pa.array((T0 + 60 * np.arange(50)) * 1000, pa.timestamp("ms"))
    table = pa.table({"Date": times} | {k: pa.array(v) for k, v in _columns(src).items()})
    pq.write_table(table, tmp_path / "Table.parquet")
    plain, _, _ = await backfill("plain")
    for sym in ("zipped", "table", str(tmp_path / "Table.parquet"), "zipped.csv.gz"):
        rows, _, _ = await backfill(sym)
        np.testing.assert_array_equal(rows, plain, err_msg=sym)


def _columns(src: Path) -> dict[str, list[float]]:
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        k.title(): [float(r[k]) for r in rows] for k in ("open", "high", "low", "close", "volume")
    }


async def test_naive_times_read_in_the_configured_timezone(tmp_path):
    write(tmp_path / "ny.csv", "Date,Open,High,Low,Close\n2024-07-01 09:30,1,2,1,2\n")
    csvfile.configure(timezone="America/New_York")
    rows, _, _ = await backfill("ny")
    assert rows["time"][0] == T0 + 182 * 86400 + 13 * 3600 + 1800  # 09:30 EDT is 13:30 UTC


# -- malformed files -------------------------------------------------------------------------------

GOOD = "2024-01-01,10,11,9,10.5,100\n"
HEAD = "Date,Open,High,Low,Close,Volume\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEAD + GOOD + "2024-01-02,10,abc,9,10.5,100\n",
            "bad.csv:3: column 'High': 'abc' is not a number",
        ),
        (HEAD + GOOD + "\n\n2024-01-02,10,11,,10.5,100\n", "bad.csv:5: column 'Low' is empty"),
        (
            HEAD + GOOD + "2024-01-02,10,11,12,10.5,100\n",
            "bad.csv:3: column 'High': 11 is below low 12",
        ),
        (HEAD + GOOD + "2024-01-02,10,11,9,10.5,-1\n", "bad.csv:3: column 'Volume': '-1' is negative"),
        (
            HEAD + GOOD + "2024-01-02,10,11,9,12,1\n",
            "bad.csv:3: column 'Close': 12 is outside low..high 9..11",
        ),
        (
            HEAD + GOOD + "2024-01-02,8,11,9,10,1\n",
            "bad.csv:3: column 'Open': 8 is outside low..high 9..11",
        ),
        # Prices: finite, positive, below 1e12 (the file: negative, zero and 1e308).
        (
            HEAD + GOOD + "2024-01-02,-5,-1,-9,-2,1\n",
            "bad.csv:3: column 'Open': '-5' is not a positive price",
        ),
        (
            HEAD + GOOD + "2024-01-02,10,11,0,10.5,1\n",
            "bad.csv:3: column 'Low': '0' is not a positive price",
        ),
        (
            HEAD + GOOD + "2024-01-02,10,1e308,9,10.5,1\n",
            "bad.csv:3: column 'High': '1e308' is not a plausible price (at or above 1e+12)",
        ),
        (
            HEAD + GOOD + "2024-01-02,10,11,9,inf,1\n",
            "bad.csv:3: column 'Close': 'inf' is not a finite number",
        ),
        (
            HEAD + GOOD + "2024-01-02,10,11,9,10.5,1e30\n",
            "bad.csv:3: column 'Volume': '1e30' is not a plausible size (at or above 1e+18)",
        ),
        # Times: from 1970 to the end of next year (99999999999 s is the year 5138).
        (
            "timestamp,open,high,low,close\n1704067200,1,1,1,1\n99999999999,1,1,1,1\n",
            "bad.csv:3: column 'timestamp': '99999999999' is 5138-11-16T09:46:39Z, not between "
            "1970 and the end of",
        ),
        (
            HEAD + "1969-12-31,10,11,9,10.5,1\n" + GOOD,
            "bad.csv:2: column 'Date': '1969-12-31' is 1969-12-31T00:00:00Z, not between 1970",
        ),
        # The first bad line of the file is named, whatever the order of its rows.
        (
            HEAD + "2024-01-03,10,11,9,10.5,1\n2024-01-02,10,11,9,-1,1\n"
            "2024-01-01,10,9,11,10.5,1\n",
            "bad.csv:3: column 'Close': '-1' is not a positive price",
        ),
        (
            HEAD + GOOD + "2024-01-02,10,11,9,nan,1\n",
            "bad.csv:3: column 'Close': 'nan' is not a finite",
        ),
        (
            HEAD + GOOD + GOOD,
            "bad.csv:3: column 'Date': '2024-01-01' is not after '2024-01-01' (line 2)",
        ),
        (
            HEAD + "2024-01-02,1,1,1,1,1\n" + GOOD + "2024-01-03,1,1,1,1,1\n",
            "bad.csv:3: column 'Date': '2024-01-01' is not after '2024-01-02' (line 2)",
        ),
        (
            HEAD + GOOD + "2024-01-32,10,11,9,10.5,1\n",
            "bad.csv:3: column 'Date': '2024-01-32' is not a date",
        ),
        (HEAD + GOOD + "2024-01-02,10,11,9,10.5\n", "bad.csv:3: 5 fields where the header has 6"),
        (
            "Date,Open,High,Low,Volume\n" + GOOD,
            "missing required column 'close' (any case); header found: 'Date', 'Open'",
        ),
        ("When,Open,High,Low,Close\n" + GOOD, "no time column"),
        (HEAD, "has a header but no rows"),
        ("", "no header"),
    ],
)
async def test_a_malformed_file_names_file_line_and_column(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(MalformedFileError) as err:
        await backfill("bad")
    assert message in str(err.value)
    assert str(err.value).startswith(str(path))


def test_a_malformed_parquet_row_is_named_by_row(tmp_path):
    table = pa.table(
        {
            "time": [T0, T0 + 60],
            "open": [1.0, 1.0],
            "high": [1.0, 0.5],
            "low": [1.0, 1.0],
            "close": [1.0, 1.0],
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(MalformedFileError,
                       match=r"p\.parquet: row 2: column 'high': 0\.5 is below low 1"):
        csvfile.symbol_info("p")


async def test_a_malformed_file_fails_stream_quotes_before_started(tmp_path, tick_shm):
    write(tmp_path / "bad.csv", HEAD + "x,1,1,1,1,1\n")
    send, recv = trio.open_memory_channel(10)
    async with trio.open_nursery() as nursery:
        with pytest.raises(MalformedFileError, match=r"bad\.csv:2: column 'Date': 'x'"):
            await nursery.start(csvfile.stream_quotes, send, ["bad"], tick_shm, trio.Event())
    assert recv.statistics().current_buffer_used == 0


# -- symbols and options ---------------------------------------------------------------------------


async def test_unknown_symbol_raises_before_started_naming_symbol_and_paths(tmp_path, tick_shm):
    send, recv = trio.open_memory_channel(10)
    async with trio.open_nursery() as nursery:
        with pytest.raises(SymbolNotFoundError) as err:
            await nursery.start(csvfile.stream_quotes, send, ["NoSuch"], tick_shm, trio.Event())
    assert "'NoSuch'" in str(err.value)
    assert str(tmp_path / "NoSuch.csv") in str(err.value)
    assert str(tmp_path / "NoSuch.parquet") in str(err.value)
    assert recv.statistics().current_buffer_used == 0
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        await backfill("missing.csv")


def test_symbols_resolve_case_insensitively_and_as_paths(tmp_path, monkeypatch):
    minute_bars(tmp_path / "GOOG.csv", 3)
    (tmp_path / "sub").mkdir()
    minute_bars(tmp_path / "sub" / "x.csv", 2)
    assert csvfile.symbol_info("goog")["path"] == str(tmp_path / "GOOG.csv")
    assert csvfile.symbol_info(str(tmp_path / "GOOG.csv"))["bars"] == 3
    assert csvfile.symbol_info("sub/x.csv")["bars"] == 2  # relative to data_dir
    monkeypatch.chdir(tmp_path / "sub")
    assert csvfile.symbol_info("x.csv")["bars"] == 2  # relative to the current directory
    monkeypatch.setenv("ENGINE_CSV_DIR", str(tmp_path))
    csvfile.configure(data_dir=None)
    assert csvfile.search_symbols("") == ["GOOG", "demo_daily", "demo_hourly"]


def test_the_shipped_samples_are_found_after_data_dir(tmp_path):
    csvfile.configure(data_dir=tmp_path)
    assert csvfile.search_symbols("demo") == ["demo_daily", "demo_hourly"]
    info = csvfile.symbol_info("demo_daily")
    assert info["path"].endswith("providers/csvfile/samples/demo_daily.csv")
    assert info["bars"] == 756
    minute_bars(tmp_path / "demo_daily.csv", 3)  # the user's own file wins
    assert csvfile.symbol_info("demo_daily")["bars"] == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"speed": "fast"}, "speed 'fast' is not a number"),
        ({"speed": "-2"}, "speed must be positive"),
        ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is unknown"),
        ({"data_dir": "/no/such/dir"}, "data_dir '/no/such/dir' is not a directory"),
        ({"colour": "red"}, "unknown option(s) colour"),
    ],
)
def test_configure_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        csvfile.configure(**options)


def test_configure_accepts_strings_and_values():
    csvfile.configure(speed="3600", timezone="Europe/Berlin")
    assert csvfile._options.speed == 3600
    assert csvfile._options.timezone == "Europe/Berlin"
    for value in ("max", "0", 0, math.inf):
        csvfile.configure(speed=value)
        assert csvfile._options.speed == math.inf


def test_parsed_files_are_cached_until_they_change(tmp_path):
    path = minute_bars(tmp_path / "c.csv", 3)
    first = load(path)
    assert load(path) is first
    minute_bars(path, 4)
    assert len(load(path).bars) == 4


# -- backfill --------------------------------------------------------------------------------------


async def test_backfill_fills_a_small_buffer_with_the_newest_bars_without_overrun(tmp_path):
    minute_bars(tmp_path / "m.csv", 2500)
    rows, first, last = await backfill("m", size=32, start=16)
    assert (first, last) == (0, 32)
    np.testing.assert_array_equal(rows["time"], T0 + 60 * np.arange(2468, 2500))
    np.testing.assert_array_equal(rows["index"], np.arange(32))
    rows, first, last = await backfill("m", size=1500, start=0)  # no room before: newest frame
    np.testing.assert_array_equal(rows["time"], T0 + 60 * np.arange(1500, 2500))


async def test_backfill_writes_count_frames_newest_with_push(tmp_path):
    minute_bars(tmp_path / "m.csv", 2500)
    rows, first, last = await backfill("m", size=10_000, count=2)
    assert (first, last) == (5000 - 1000, 5000 + 1000)  # one frame pushed, one prepended
    np.testing.assert_array_equal(rows["time"], T0 + 60 * np.arange(500, 2500))


async def test_backfill_keeps_rows_already_in_the_buffer(tmp_path):
    minute_bars(tmp_path / "m.csv", 100)
    with ShmArray.create(ohlc_dtype, 200) as shm:
        held = np.zeros(2, dtype=ohlc_dtype)
        held["time"] = [T0 + 60 * 40, T0 + 60 * 41]
        shm.push(held)
        async with trio.open_nursery() as nursery:
            await nursery.start(csvfile.backfill_bars, "m", shm)
        times = shm.array["time"]
        assert len(times) == 100
        assert (np.diff(times) == 60).all()
        assert (shm.array["volume"][40:42] == 0).all()  # the held rows were not overwritten


# -- replay ----------------------------------------------------------------------------------------

REPLAY = """
timestamp,open,high,low,close,volume
1704067200,10,12,9.5,11,8
1704067260,11,11.2,9,9.5,4
1704067320,10,11,9,10.5,4
"""


class RecordingStatus:
    """A task_status that records what `started` got and how many messages were queued then."""

    def __init__(self, recv: trio.MemoryReceiveChannel) -> None:
        self.recv = recv
        self.value = None
        self.queued_at_start = None
        self.event = trio.Event()

    def started(self, value=None) -> None:
        self.value = value
        self.queued_at_start = self.recv.statistics().current_buffer_used
        self.event.set()


async def test_replay_sends_open_near_far_close_after_started(tmp_path, tick_shm, autojump_clock):
    write(tmp_path / "r.csv", REPLAY)
    csvfile.configure(speed="max")
    send, recv = trio.open_memory_channel(100)
    live = trio.Event()
    status = RecordingStatus(recv)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: csvfile.stream_quotes(send, ["R"], tick_shm, live, task_status=status)
        )
        msgs = [await recv.receive() for _ in range(12)]
        # Then where the data ends: a quote without ticks at the last bar's end.
        assert await recv.receive() == {"symbol": "R", "last": 10.5, "time": float(T0 + 180),
                                        "ticks": []}
        assert status.queued_at_start == 0
        assert live.is_set()
        await trio.sleep(3600)
        assert recv.statistics().current_buffer_used == 0  # exhausted: idle, not ended
        assert nursery.child_tasks
        nursery.cancel_scope.cancel()
    init, first = status.value
    assert init["R"]["bars"] == 3
    assert init["R"]["synthetic_ticks"]
    assert init["R"]["replay"]
    assert first["R"] == {"symbol": "R", "last": 10.0, "time": float(T0), "ticks": []}
    assert {m["symbol"] for m in msgs} == {"R"}
    assert [m["last"] for m in msgs] == [10, 9.5, 12, 11, 11, 11.2, 9, 9.5, 10, 9, 11, 10.5]
    times = [m["time"] for m in msgs]
    assert times[:4] == [T0, T0 + 20, T0 + 40, T0 + 60 - 0.001]
    assert times == sorted(times)
    tick = msgs[1]["ticks"][0]
    assert tick == {"type": "trade", "price": 9.5, "size": 2.0, "time": T0 + 20}


async def test_replay_paces_by_speed_on_trios_clock(tmp_path, tick_shm, autojump_clock):
    minute_bars(tmp_path / "m.csv", 5)
    csvfile.configure(speed=60)  # a one-minute bar plays in one second
    send, recv = trio.open_memory_channel(100)
    async with trio.open_nursery() as nursery:
        await nursery.start(csvfile.stream_quotes, send, ["m"], tick_shm, trio.Event())
        start = trio.current_time()
        for _ in range(20):
            msg = await recv.receive()
            assert trio.current_time() - start == pytest.approx((msg["time"] - T0) / 60)
        assert trio.current_time() - start == pytest.approx(5 - 0.001 / 60)
        nursery.cancel_scope.cancel()


async def test_replay_merges_symbols_by_time_and_echoes_them(tmp_path, tick_shm, autojump_clock):
    minute_bars(tmp_path / "A.csv", 2, t0=T0, step=120)
    minute_bars(tmp_path / "B.csv", 2, t0=T0 + 60, step=120)
    csvfile.configure(speed=1000)
    send, recv = trio.open_memory_channel(100)
    async with trio.open_nursery() as nursery:
        init, first = await nursery.start(
            csvfile.stream_quotes, send, ["a", "b"], tick_shm, trio.Event()
        )
        assert set(init) == set(first) == {"a", "b"}
        msgs = [await recv.receive() for _ in range(16)]
        nursery.cancel_scope.cancel()
    # Each file's period is 120 s, so bar i of A covers [T0+120i, T0+120i+120): B's bars overlap.
    assert [m["time"] for m in msgs] == sorted(m["time"] for m in msgs)
    assert {m["symbol"] for m in msgs} == {"a", "b"}
    assert [m["symbol"] for m in msgs[:3]] == ["a", "a", "b"]


async def test_the_provider_passes_check_provider(tmp_path):
    minute_bars(tmp_path / "AAA.csv", 300)
    minute_bars(tmp_path / "bbb.csv", 300, t0=T0 + 30)
    csvfile.configure(speed="max")
    report = await check_provider("providers.csvfile", timeout=2.0)
    assert report.ok, report.format()
    assert report.symbols == ["AAA", "bbb"]
