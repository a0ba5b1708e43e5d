"""The durable ledger and the data-directory paths: format, recovery, locking, and kill -9."""

from __future__ import annotations

import logging
import os
import random
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from engine import paths
from engine.clearing.ledger import (
    LOG_NAME,
    Ledger,
    LedgerCorrupt,
    LedgerError,
    LedgerLocked,
    read_events,
)
from engine.orders import (
    AccountOpened,
    LedgerEvent,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    SubmitOrder,
)

REPO = Path(__file__).resolve().parents[2]
HEADER = 12  # magic (8) + version (4)
ADAPTER = TypeAdapter(LedgerEvent)


def every_event() -> list:
    order = SubmitOrder(client_id="c1", symbol="BTCUSDT", side="buy", size=0.5,
                        order_type="stop_limit", limit_price=101.0, stop_price=100.0, tif="DAY",
                        time=1.5, strategy="s")
    return [
        AccountOpened(time=1.0, account="a", cash=100_000.0),
        OrderAccepted(time=2.0, account="a", order=order),
        OrderRejected(time=3.0, account="a", client_id="c2", symbol="ETH", reason="no margin"),
        OrderTriggered(time=4.0, account="a", client_id="c1", symbol="BTCUSDT", price=100.0),
        OrderFilled(time=5.0, account="a", fill_id=1, client_id="c1", symbol="BTCUSDT",
                    side="buy", price=100.5, size=0.25, fee=0.01, liquidity="taker",
                    remaining=0.25),
        OrderModified(time=6.0, account="a", client_id="c1", size=0.4, limit_price=102.0),
        OrderCancelled(time=7.0, account="a", client_id="c1", symbol="BTCUSDT", remaining=0.15,
                       reason="DAY expired"),
    ]


def fills(start: int, n: int) -> list[OrderFilled]:
    return [OrderFilled(time=float(i), fill_id=i, client_id=f"o{i}", symbol="X", side="sell",
                        price=10.0 + i, size=1.0, fee=0.0, liquidity="maker", remaining=0.0)
            for i in range(start, start + n)]


def records(path: Path) -> list[tuple[int, bytes]]:
    """An independent reader of the format: (offset, payload) of every record."""
    data = path.read_bytes()
    assert data[:HEADER] == struct.pack("<8sI", b"ENGLEDGR", 1)
    out, offset = [], HEADER
    while offset < len(data):
        length, crc = struct.unpack_from("<II", data, offset)
        payload = data[offset + 8:offset + 8 + length]
        assert zlib.crc32(payload) == crc
        out.append((offset, payload))
        offset += 8 + length
    return out


def frame(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def test_round_trip_every_event_type(tmp_path):
    events = every_event()
    with Ledger.open(tmp_path / "acct") as ledger:
        assert ledger.path == tmp_path / "acct" / LOG_NAME
        assert ledger.append(events) == len(events)
        assert list(ledger.events()) == events
    with Ledger.open(tmp_path / "acct", create=False) as ledger:
        assert len(ledger) == len(events)
        assert list(ledger.events()) == events
    # The payload is exactly the union adapter's JSON, whatever encoder the ledger uses.
    assert [p for _, p in records(tmp_path / "acct" / LOG_NAME)] == [
        ADAPTER.dump_json(e) for e in events]


def test_reopen_and_append_more(tmp_path):
    log_file = tmp_path / "ledger.log"  # a file path works as well as an account directory
    with Ledger.open(log_file) as ledger:
        assert ledger.append(fills(0, 3)) == 3
        assert ledger.append([]) == 3
    with Ledger.open(log_file) as ledger:
        assert len(ledger) == 3
        assert ledger.append(fills(3, 2)) == 5
        assert ledger.append(fills(5, 1)) == 6
        assert [e.fill_id for e in ledger.events()] == list(range(6))


def test_events_is_a_snapshot(tmp_path):
    with Ledger.open(tmp_path) as ledger:
        ledger.append(fills(0, 2))
        it = ledger.events()
        ledger.append(fills(2, 2))
        assert [e.fill_id for e in it] == [0, 1]


def test_append_rejects_non_events_before_writing(tmp_path):
    with Ledger.open(tmp_path) as ledger:
        with pytest.raises(TypeError, match="SubmitOrder"):
            ledger.append([*fills(0, 1), SubmitOrder(symbol="X", side="buy", size=1)])
        assert len(ledger) == 0
    assert records(tmp_path / LOG_NAME) == []


def test_missing_ledger_without_create(tmp_path):
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger.open(tmp_path / "nope", create=False)
    assert not (tmp_path / "nope").exists()


def test_closed_ledger_refuses_work(tmp_path):
    ledger = Ledger.open(tmp_path)
    ledger.close()
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.append(fills(0, 1))
    with pytest.raises(LedgerError, match="closed"):
        ledger.events()


def test_failed_append_poisons_the_ledger(tmp_path, monkeypatch):
    import engine.clearing.ledger as ledger_module

    def broken_sync(fd):
        raise OSError(5, "Input/output error")

    with Ledger.open(tmp_path) as ledger:
        ledger.append(fills(0, 2))
        monkeypatch.setattr(ledger_module, "_sync", broken_sync)
        with pytest.raises(LedgerError, match="Input/output error"):
            ledger.append(fills(2, 3))
        monkeypatch.undo()
        with pytest.raises(LedgerError, match="reopen"):
            ledger.append(fills(2, 1))
    assert len(records(tmp_path / LOG_NAME)) == 2  # the failed batch was cut off again
    with Ledger.open(tmp_path) as ledger:
        assert ledger.append(fills(2, 1)) == 3


def _write_three(tmp_path: Path) -> Path:
    with Ledger.open(tmp_path) as ledger:
        ledger.append(fills(0, 3))
    return tmp_path / LOG_NAME


@pytest.mark.parametrize("damage", [
    "partial record header", "partial payload", "zero padding", "half of a batch",
    "zeros after half a record", "zeros over the end of a record"])
def test_torn_tail_is_saved_aside_then_truncated(tmp_path, caplog, damage):
    path = _write_three(tmp_path)
    good = path.read_bytes()
    one = frame(ADAPTER.dump_json(fills(3, 1)[0]))
    two = one + frame(ADAPTER.dump_json(fills(4, 1)[0]))
    tail = {
        "partial record header": one[:5],
        "partial payload": one[:20],
        "zero padding": bytes(4096),
        "half of a batch": two[:-30],
        "zeros after half a record": one[:20] + bytes(20),
        "zeros over the end of a record": one[:20] + bytes(len(one) - 20 + 100),
    }[damage]
    path.write_bytes(good + tail)
    kept = 4 if damage == "half of a batch" else 3  # a whole record of a torn batch survives
    end = len(good) + (len(one) if kept == 4 else 0)
    # Reader and writer agree on what is torn: the reader stops quietly before it.
    assert [e.fill_id for _, e in read_events(tmp_path)] == list(range(kept))

    with caplog.at_level(logging.WARNING, logger="engine.clearing.ledger"):
        ledger = Ledger.open(tmp_path)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert str(path) in warnings[0]
    side = path.with_name(f"{LOG_NAME}.torn-{end}")
    assert f"{len(good) + len(tail) - end} bytes at byte offset {end}" in warnings[0]
    assert f"saved to {side}" in warnings[0]
    assert side.read_bytes() == (good + tail)[end:]  # nothing is thrown away
    with ledger:
        assert len(ledger) == kept
        assert path.stat().st_size == end
        assert ledger.append(fills(kept, 1)) == kept + 1
    caplog.clear()
    with Ledger.open(tmp_path) as ledger:
        assert [e.fill_id for e in ledger.events()] == list(range(kept + 1))
    assert caplog.records == []


def test_a_second_torn_tail_at_the_same_spot_gets_its_own_side_file(tmp_path):
    path = _write_three(tmp_path)
    good = path.read_bytes()
    for n, tail in enumerate((b"\x05\x00", b"\x07\x00\x00")):
        path.write_bytes(good + tail)
        Ledger.open(tmp_path).close()
        side = path.with_name(f"{LOG_NAME}.torn-{len(good)}" + (f".{n}" if n else ""))
        assert side.read_bytes() == tail
    assert path.read_bytes() == good


@pytest.mark.parametrize("damage", ["payload byte", "crc field", "impossible length"])
def test_a_whole_last_record_that_fails_is_refused_untouched(tmp_path, damage):
    # An append that returned wrote the whole record: a whole one that fails its check is
    # damage to a record someone may have been told about, never a crash's torn tail.
    path = _write_three(tmp_path)
    offset, payload = records(path)[-1]
    data = bytearray(path.read_bytes())
    if damage == "payload byte":
        data[-1] ^= 1
    elif damage == "crc field":
        data[offset + 4] ^= 0xFF
    else:
        data[offset + 3] = 0x7F
    path.write_bytes(bytes(data))
    for refuse in (lambda: Ledger.open(tmp_path), lambda: list(read_events(tmp_path))):
        with pytest.raises(LedgerCorrupt) as info:
            refuse()
        assert (info.value.record, info.value.offset) == (2, offset)
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{path}: record 2 (counting from 0) at byte offset {offset}")
        assert message.endswith("restore it from a backup, or move it aside to start the "
                                "account afresh")
    assert path.read_bytes() == bytes(data)
    assert list(tmp_path.glob("*.torn-*")) == []


@pytest.mark.parametrize("present", [0, 5, 11])
def test_an_empty_or_short_file_is_refused_untouched(tmp_path, present):
    path = tmp_path / LOG_NAME
    path.write_bytes(struct.pack("<8sI", b"ENGLEDGR", 1)[:present])
    what = "is empty" if present == 0 else f"holds {present} bytes"
    for refuse in (lambda: Ledger.open(tmp_path), lambda: list(read_events(tmp_path))):
        with pytest.raises(LedgerError, match=f"^{path}: {what}.*move it aside"):
            refuse()
    assert path.stat().st_size == present


def test_an_unreadable_ledger_is_refused_with_one_line(tmp_path, monkeypatch):
    path = _write_three(tmp_path)
    real_open = os.open

    def denied(p, *a, **kw):  # the tests run as root, whom chmod does not stop
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *a, **kw)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(LedgerError) as info:
        Ledger.open(tmp_path)
    assert str(info.value) == (f"{path}: cannot open the ledger (Permission denied); give the "
                               "user running the engine read and write access to it and its "
                               "directory")
    monkeypatch.undo()
    path.chmod(0)
    try:
        if os.geteuid() != 0:
            with pytest.raises(LedgerError, match="cannot read the ledger"):
                list(read_events(tmp_path))
    finally:
        path.chmod(0o600)
    with Ledger.open(tmp_path) as ledger:  # the lock was released on the way out
        assert len(ledger) == 3


@pytest.mark.parametrize("damage", ["payload byte", "crc field", "length field", "zeroed record"])
def test_corruption_before_valid_records_is_refused_untouched(tmp_path, damage):
    path = _write_three(tmp_path)
    offset, payload = records(path)[1]
    data = bytearray(path.read_bytes())
    if damage == "payload byte":
        data[offset + 8 + 10] ^= 0x20
    elif damage == "crc field":
        data[offset + 4] ^= 0xFF
    elif damage == "length field":
        data[offset + 3] = 0x7F
    else:
        data[offset:offset + 8 + len(payload)] = bytes(8 + len(payload))
    path.write_bytes(bytes(data))
    before = path.read_bytes()

    with pytest.raises(LedgerCorrupt) as info:
        Ledger.open(tmp_path)
    assert (info.value.record, info.value.offset) == (1, offset)
    assert str(path) in str(info.value)
    assert f"record 1 (counting from 0) at byte offset {offset}" in str(info.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize("last", [False, True])
def test_whole_but_undecodable_record_is_never_truncated(tmp_path, last):
    path = _write_three(tmp_path)
    good = path.read_bytes()
    alien = frame(b'{"type":"order_teleported","time":1.0}')
    data = good + alien if last else good + alien + frame(ADAPTER.dump_json(fills(3, 1)[0]))
    path.write_bytes(data)
    with Ledger.open(tmp_path) as ledger:
        assert len(ledger) == (4 if last else 5)
        with pytest.raises(LedgerCorrupt, match=f"record 3 .* offset {len(good)} does not decode"):
            list(ledger.events())
    assert path.read_bytes() == data


def test_not_a_ledger(tmp_path):
    path = tmp_path / LOG_NAME
    path.write_bytes(b"hello, this is not a ledger")
    with pytest.raises(LedgerError, match="not an engine ledger"):
        Ledger.open(tmp_path)
    assert path.read_bytes() == b"hello, this is not a ledger"


HOLDER = textwrap.dedent("""
    import sys
    from engine.clearing.ledger import Ledger
    with Ledger.open(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()
""")


def test_lock_conflict_names_the_holder(tmp_path):
    account = tmp_path / "acct"
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(account)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(LedgerLocked) as info:
            Ledger.open(account)
        assert info.value.pid == child.pid
        assert str(account) in str(info.value)
        assert f"process {child.pid}" in str(info.value)
    finally:
        child.stdin.close()
        child.wait(timeout=10)
        child.stdout.close()
    assert child.returncode == 0
    with Ledger.open(account):
        with pytest.raises(LedgerLocked, match=f"process {os.getpid()}"):
            Ledger.open(account)  # a second open in the same process is refused too


WRITER = textwrap.dedent("""
    import random, sys
    from engine.clearing.ledger import Ledger
    from engine.orders import OrderFilled
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    with Ledger.open(path) as ledger:
        next_id = sum(1 for _ in ledger.events())
        while True:
            batch = [OrderFilled(time=float(i), fill_id=i, client_id=f"o{i}", symbol="X",
                                 side="buy", price=1.0, size=1.0, fee=0.0, liquidity="taker",
                                 remaining=0.0)
                     for i in range(next_id, next_id + rng.randint(1, 400))]
            ledger.append(batch)
            next_id = batch[-1].fill_id + 1
            print(batch[-1].fill_id, flush=True)  # told only after append returned
""")


def test_kill_9_loses_no_announced_fill(tmp_path):
    seed = int(os.environ.get("LEDGER_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    account = tmp_path / "acct"
    announced: list[int] = []
    for round_ in range(5):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(account), str(seed + round_)],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        for _ in range(rng.randint(1, 6)):
            line = child.stdout.readline()
            assert line.endswith("\n"), f"seed {seed}: writer died: {child.stderr.read()}"
            announced.append(int(line))
        child.send_signal(signal.SIGKILL)  # wherever it is: encoding, mid-write, in fsync
        child.wait()
        # Lines already in the pipe were printed after their append returned: they count too.
        announced += [int(line) for line in child.stdout.read().splitlines()]
        child.stdout.close()
        child.stderr.close()

        with Ledger.open(account) as ledger:
            ids = [e.fill_id for e in ledger.events()]
        assert ids == list(range(len(ids))), f"seed {seed}: gap, duplicate or reorder"
        assert announced == sorted(set(announced)), f"seed {seed}: writer announced out of order"
        assert announced[-1] < len(ids), (
            f"seed {seed}: round {round_} announced fill {announced[-1]} but the ledger "
            f"ends at {len(ids) - 1}")


# -- paths ------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("ENGINE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_engine_home_is_honoured(home, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(home / "eh"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg"))
    assert paths.data_dir() == home / "eh"
    assert stat.S_IMODE((home / "eh").stat().st_mode) == 0o700
    assert paths.account_dir("main") == home / "eh" / "accounts" / "main"
    assert not (home / "xdg").exists()


def test_xdg_then_home_fallbacks(home, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg"))
    assert paths.data_dir() == home / "xdg" / "engine"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec says to ignore it
    assert paths.data_dir() == home / "home" / ".local" / "share" / "engine"
    assert stat.S_IMODE(paths.data_dir().stat().st_mode) == 0o700


def test_list_accounts(home, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(home / "eh"))
    assert paths.list_accounts() == []
    for name in ("zeta", "alpha.1", "b_2-c"):
        with Ledger.open(paths.account_dir(name)):
            pass
    (home / "eh" / "accounts" / ".trash").mkdir()
    assert paths.list_accounts() == ["alpha.1", "b_2-c", "zeta"]


@pytest.mark.parametrize("name", ["a", "A-b_c.9", "x" * 64, "1.."])
def test_good_account_names(home, monkeypatch, name):
    monkeypatch.setenv("ENGINE_HOME", str(home / "eh"))
    assert paths.account_dir(name).name == name


@pytest.mark.parametrize("name", ["", ".hidden", "..", "a/b", "x" * 65, "sp ace", "naïve",
                                  "ok\n", "a\\b"])
def test_bad_account_names(home, monkeypatch, name):
    monkeypatch.setenv("ENGINE_HOME", str(home / "eh"))
    with pytest.raises(ValueError, match="not starting with '.'") as info:
        paths.account_dir(name)
    assert repr(name) in str(info.value)
