"""Damaged paper-account ledgers, as a user meets them: through `engine account` and through
`open_account` (what `engine run --paper` and the clearing actor call). Each case is either a
refusal (one line naming the file and what to do, non-zero exit, nothing changed) or a recovery
that keeps every fill a strategy was told about (a crash's torn tail saved to a side file)."""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from engine.clearing.broker import open_account
from engine.clearing.ledger import LOG_NAME, Ledger, LedgerError, LedgerLocked
from engine.clock import ReplayClock
from engine.orders import (
    AccountOpened,
    LedgerEvent,
    OrderAccepted,
    OrderFilled,
    SubmitOrder,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
ADAPTER = TypeAdapter(LedgerEvent)
REFUSE_HINT = "move it aside"


def frame(event) -> bytes:
    payload = ADAPTER.dump_json(event)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def history(n_fills: int) -> list:
    """An account's events: opened, then n orders accepted and filled."""
    events: list = [AccountOpened(time=T0, account="acct", cash=1_000_000.0)]
    for i in range(1, n_fills + 1):
        order = SubmitOrder(client_id=f"o{i}", symbol="X", side="buy", size=1.0, time=T0 + i)
        events += [OrderAccepted(time=T0 + i, account="acct", order=order),
                   OrderFilled(time=T0 + i, account="acct", fill_id=i, client_id=f"o{i}",
                               symbol="X", side="buy", price=100.0 + i, size=1.0, fee=0.0,
                               liquidity="taker", remaining=0.0)]
    return events


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def ledger_file(home) -> Path:
    with Ledger.open(home / "accounts" / "acct") as ledger:
        ledger.append(history(3))
    return home / "accounts" / "acct" / LOG_NAME


def engine_cli(*args: str, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ),
                          preexec_fn=preexec)


def assert_refused(result: subprocess.CompletedProcess, path: Path, *words: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert str(path) in lines[0]
    for w in words:
        assert w in lines[0], lines[0]


def _damage(path: Path, case: str) -> None:
    data = bytearray(path.read_bytes())
    last = len(data) - len(frame(history(3)[-1]))
    if case == "empty":
        data = bytearray()
    elif case == "short header":
        data = data[:7]
    elif case == "bad crc on the whole last record":
        data[last + 4] ^= 0xFF
    elif case == "flipped byte in the last payload":
        data[-2] ^= 0x01
    elif case == "flipped byte in an early record":
        data[12 + 8 + 20] ^= 0x20
    elif case == "impossible length":
        data[last:last + 4] = struct.pack("<I", 0xFFFFFFF0)
    elif case == "not a ledger":
        data = bytearray(b"date,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n")
    elif case == "does not start with AccountOpened":
        data = data[:12] + data[12 + len(frame(history(3)[0])):]
    elif case == "fill of an order never accepted":
        data = data[:12] + frame(history(0)[0]) + frame(history(1)[2])
    path.write_bytes(bytes(data))


REFUSALS = ["empty", "short header", "bad crc on the whole last record",
            "flipped byte in the last payload", "flipped byte in an early record",
            "impossible length", "not a ledger", "does not start with AccountOpened",
            "fill of an order never accepted"]


@pytest.mark.parametrize("case", REFUSALS)
def test_damage_is_refused_with_one_line_and_nothing_changes(ledger_file, case):
    _damage(ledger_file, case)
    before = ledger_file.read_bytes()
    for action in ("show", "fills"):
        assert_refused(engine_cli("account", action, "acct"), ledger_file, REFUSE_HINT)
    with pytest.raises(LedgerError) as info:
        open_account("acct", ["X"], clock=ReplayClock(T0))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(ledger_file))
    assert REFUSE_HINT in message
    assert ledger_file.read_bytes() == before
    assert sorted(p.name for p in ledger_file.parent.iterdir()) == [LOG_NAME, LOG_NAME + ".lock"]
    # Refused, the account was not replaced by a fresh one, and no lock was left held.
    with pytest.raises(LedgerError) as again:
        open_account("acct", ["X"], clock=ReplayClock(T0))
    assert not isinstance(again.value, LedgerLocked)


def _without_root_powers() -> None:
    """In the child: drop the capabilities that let root read any file (bounding set)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unreadable_ledger_is_refused_with_one_line(ledger_file):
    ledger_file.chmod(0)
    try:
        preexec = _without_root_powers if os.geteuid() == 0 else None
        probe = subprocess.run([sys.executable, "-c", f"open({str(ledger_file)!r}).close()"],
                               capture_output=True, preexec_fn=preexec, timeout=60)
        if probe.returncode == 0:
            pytest.skip("this process can read a file of mode 000 even without root powers")
        for action in ("show", "fills"):
            assert_refused(engine_cli("account", action, "acct", preexec=preexec),
                           ledger_file, "cannot read the ledger (Permission denied)",
                           "read and write access")
    finally:
        ledger_file.chmod(0o600)


def test_a_ledger_that_is_a_directory_is_refused_with_one_line(home):
    path = home / "accounts" / "acct" / LOG_NAME
    path.mkdir(parents=True)
    assert_refused(engine_cli("account", "show", "acct"), path, "cannot read the ledger")
    with pytest.raises(LedgerError, match=f"^{path}: cannot open the ledger"):
        open_account("acct", ["X"], clock=ReplayClock(T0))


@pytest.mark.parametrize("tail", ["half a record", "a record header", "zero fill"])
def test_a_torn_tail_is_read_past_then_saved_and_cut_off(ledger_file, tail):
    good = ledger_file.read_bytes()
    extra = {"half a record": frame(history(4)[-1])[:40], "a record header": b"\x10\x01\x00",
             "zero fill": bytes(8192)}[tail]
    ledger_file.write_bytes(good + extra)
    shown = engine_cli("account", "fills", "acct", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [f["fill_id"] for f in json.loads(shown.stdout)] == [1, 2, 3]
    broker = open_account("acct", ["X"], clock=ReplayClock(T0))
    try:
        assert [f.fill_id for f in broker.fills] == []  # this run's; the account has them:
        assert broker.account.position("X") == 3.0
        assert broker.account.fills == 3
    finally:
        broker.ledger.close()
    assert ledger_file.read_bytes() == good
    assert (ledger_file.parent / f"{LOG_NAME}.torn-{len(good)}").read_bytes() == extra


# -- a crash at any byte of an append ------------------------------------------------------


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.integers(1, 6), min_size=1, max_size=5), data=st.data())
def test_a_crash_at_any_byte_of_an_append_keeps_every_acknowledged_record(tmp_path_factory,
                                                                          batches, data):
    directory = tmp_path_factory.mktemp("crash")
    events = history(sum(batches))
    sizes = []  # the file's size after each acknowledged append
    with Ledger.open(directory) as ledger:
        ledger.append(events[:1])
        sizes.append(ledger.path.stat().st_size)
        done = 1
        for n in batches:
            ledger.append(events[done:done + n])
            done += n
            sizes.append(ledger.path.stat().st_size)
    path = directory / LOG_NAME
    full = path.read_bytes()
    # The last append is the one the crash cut: anything short of its end was never
    # acknowledged; a power cut may also leave zeros where its data should be.
    acked = sizes[-2]
    cut = data.draw(st.integers(acked, len(full) - 1), label="cut")
    zeros = data.draw(st.sampled_from([0, 1, 4096]), label="zero fill")
    path.write_bytes(full[:cut] + bytes(zeros))
    with Ledger.open(directory) as ledger:
        kept = list(ledger.events())
    assert kept == events[:len(kept)]
    whole = sum(1 for s in sizes if s <= cut)
    assert len(kept) >= whole
    end = path.stat().st_size
    sides = sorted(directory.glob(f"{LOG_NAME}.torn-*"))
    if end == cut + zeros:
        assert sides == []
    else:
        assert [s.name for s in sides] == [f"{LOG_NAME}.torn-{end}"]
        assert path.read_bytes() + sides[0].read_bytes() == full[:cut] + bytes(zeros)


# -- kill -9 of a real writer ----------------------------------------------------------------


WRITER = textwrap.dedent("""
    import os, random, sys
    from engine.clearing.broker import open_account
    from engine.clearing.config import BrokerConfig, RiskLimits
    from engine.clock import ReplayClock
    from engine.orders import OrderFilled, SubmitOrder

    seed, stop_in = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    broker = open_account("chaos", ["X"], cash=1e12, clock=ReplayClock(1.7e9),
                          config=BrokerConfig(risk=RiskLimits(leverage=None)))
    broker.group_commit = True  # one append (one fsync) per batch, then the strategy is told
    write, appends = os.write, [0]

    def stopping_write(fd, data):
        # With stop_in > 0, the stop_in-th append stops part way through its write() and
        # waits to be killed: a crash mid-append, on purpose.
        if fd == broker.ledger._fd:
            appends[0] += 1
            if appends[0] == stop_in:
                write(fd, bytes(data[:rng.randrange(1, 100)]))  # inside its first record
                print("stopped mid-append", flush=True)
                sys.stdin.read()
        return write(fd, data)

    os.write = stopping_write

    def told(events):
        ids = [e.fill_id for e in events if type(e) is OrderFilled]
        if ids:
            print(ids[-1], flush=True)

    broker.attach(None, told)
    broker.on_batch([{"symbol": "X", "bid": 100.0, "ask": 100.0}], [], [])
    print("ready", flush=True)
    k = 0
    while True:
        for _ in range(rng.randint(1, 400)):
            k += 1
            broker.submit(SubmitOrder(client_id=f"{seed}-{k}", symbol="X",
                                      side=rng.choice(("buy", "sell")), size=1.0))
        broker.flush()
""")


def test_kill_9_mid_append_then_reopen_keeps_every_fill_a_strategy_heard(home):
    seed = int(os.environ.get("LEDGER_CHAOS_SEED", random.SystemRandom().randrange(2**32)))
    rng = random.Random(seed)
    path = home / "accounts" / "chaos" / LOG_NAME
    heard = 0
    for round_ in range(4):
        # Even rounds: killed wherever it is (encoding, writing, in fsync); odd rounds: killed
        # while stopped part way through the write of an append.
        stop_in = rng.randint(1, 6) if round_ % 2 else 0
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(seed + round_),
                                  str(stop_in)], cwd=ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ))
        try:
            assert child.stdout.readline() == "ready\n", f"seed {seed}: {child.stderr.read()}"
            for _ in range(stop_in or rng.randint(1, 8)):
                line = child.stdout.readline()
                assert line.endswith("\n"), f"seed {seed}: writer died: {child.stderr.read()}"
                if line == "stopped mid-append\n":
                    break
                heard = max(heard, int(line))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # Lines already in the pipe were printed after their append returned: they count too.
        heard = max([heard, *(int(x) for x in child.stdout.read().split() if x.isdigit())])
        for pipe in (child.stdin, child.stdout, child.stderr):
            pipe.close()

        # The reader takes the file as the crash left it: every fill heard is there.
        shown = engine_cli("account", "fills", "chaos", "--json")
        assert shown.returncode == 0, f"seed {seed}: {shown.stderr}"
        assert len(json.loads(shown.stdout)) >= heard, f"seed {seed}"
        before = path.read_bytes()
        broker = open_account("chaos", ["X"], clock=ReplayClock(1.7e9))
        try:
            ids = [e.fill_id for e in broker.ledger.events() if type(e) is OrderFilled]
        finally:
            broker.ledger.close()
        assert ids == list(range(1, len(ids) + 1)), f"seed {seed}: gap, duplicate or reorder"
        assert len(ids) >= heard, f"seed {seed}: round {round_} heard fill {heard}, kept {len(ids)}"
        after = path.read_bytes()
        sides = sorted(path.parent.glob(f"{LOG_NAME}.torn-{len(after)}*"))
        if stop_in:  # a torn tail was left: it is in a side file, byte for byte
            assert after != before, f"seed {seed}"
        if after != before:
            assert after + sides[-1].read_bytes() == before, f"seed {seed}"
