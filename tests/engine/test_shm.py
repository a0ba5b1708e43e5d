"""ShmArray: in-place cross-process reads, bounds, and no segment outliving its owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine.shm import ShmArray, ShmError, ShmToken, ohlc_dtype, tick_dtype
from tests.conftest import segments_of, shm_names


def _bars(n: int, t0: int = 1_700_000_000) -> np.ndarray:
    rows = np.zeros(n, dtype=ohlc_dtype)
    rows["time"] = t0 + np.arange(n) * 60
    rows["close"] = 100.0 + np.arange(n)
    return rows


def test_push_and_prepend_keep_time_order_and_index():
    with ShmArray.create(ohlc_dtype, 100) as shm:
        assert (shm.first, shm.last, len(shm)) == (50, 50, 0)
        assert shm.push(_bars(3, t0=1000)) == 53
        assert shm.prepend(_bars(2, t0=880)) == 48
        arr = shm.array
        assert list(arr["time"]) == [880, 940, 1000, 1060, 1120]
        assert list(arr["index"]) == [48, 49, 50, 51, 52]
        assert np.shares_memory(arr, shm.buffer)
        assert list(shm.last_rows(2)["time"]) == [1060, 1120]


def test_push_past_the_end_and_prepend_past_the_start_raise_and_write_nothing():
    with ShmArray.create(ohlc_dtype, 10, start=5) as shm:
        shm.push(_bars(5))
        with pytest.raises(ShmError, match="overruns"):
            shm.push(_bars(1))
        shm.prepend(_bars(5))
        with pytest.raises(ShmError, match="overruns"):
            shm.prepend(_bars(1))
        assert (shm.first, shm.last) == (0, 10)
        assert shm.room_after == 0
        assert shm.room_before == 0


def test_rows_of_another_layout_are_copied_field_by_field_and_foreign_fields_rejected():
    with ShmArray.create(tick_dtype, 8, start=0) as shm:
        rows = np.zeros(2, dtype=[("price", "f8"), ("time", "f8")])
        rows["price"] = [1.5, 2.5]
        shm.push(rows)
        assert list(shm.array["price"]) == [1.5, 2.5]
        with pytest.raises(ShmError, match="do not fit"):
            shm.push(np.zeros(1, dtype=[("bogus", "f8")]))


def test_segment_is_private_to_the_user():
    with ShmArray.create(ohlc_dtype, 4) as shm:
        mode = os.stat(f"/dev/shm/{shm.name}").st_mode & 0o777
        assert mode == 0o600


def test_attach_in_this_process_reads_in_place_and_is_read_only():
    with ShmArray.create(ohlc_dtype, 16, start=0) as shm:
        reader = ShmArray.attach(shm.token.model_dump())
        shm.push(_bars(2))
        assert np.shares_memory(reader.array, reader.buffer)
        assert list(reader.array["close"]) == [100.0, 101.0]
        with pytest.raises(ShmError, match="read-only"):
            reader.push(_bars(1))
        with pytest.raises(ValueError, match="read-only"):
            reader.array["close"][0] = 1.0
        reader.close()
        reader.unlink()  # a reader never removes the writer's segment
        assert shm.name in shm_names()


def test_attach_with_a_wrong_token_fails_clearly():
    with ShmArray.create(ohlc_dtype, 16) as shm:
        bad = ShmToken(name=shm.name, dtype_descr=shm.token.dtype_descr, size=17)
        with pytest.raises(ShmError, match="bytes"):
            ShmArray.attach(bad)
    with pytest.raises(ShmError, match="no shared-memory segment"):
        ShmArray.attach(bad)


_READER = textwrap.dedent(
    """
    import sys, json
    import numpy as np
    from engine.shm import ShmArray
    token = json.loads(sys.argv[1])
    r = ShmArray.attach(token)
    print("attached", flush=True)
    sys.stdin.readline()  # the writer pushed more rows meanwhile
    arr = r.array
    print(json.dumps({
        "shares": bool(np.shares_memory(arr, r.buffer)),
        "closes": arr["close"].tolist(),
        "owned_base": arr.base is not None,
    }), flush=True)
    r.close()
    """
)


def _spawn_reader(token: ShmToken) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _READER, token.model_dump_json()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def test_reader_in_another_process_sees_rows_in_place_and_does_not_unlink():
    import json

    with ShmArray.create(ohlc_dtype, 64, start=0) as shm:
        shm.push(_bars(2))
        proc = _spawn_reader(shm.token)
        assert proc.stdout.readline().strip() == "attached"
        shm.push(_bars(3, t0=1_700_000_120))  # written after the reader attached
        out, _ = proc.communicate("go\n", timeout=30)
        seen = json.loads(out)
        assert seen["shares"] is True
        assert seen["closes"] == [100.0, 101.0, 100.0, 101.0, 102.0]
        assert proc.returncode == 0
        # The reader's exit must not have removed the writer's segment (resource_tracker trap).
        assert shm.name in shm_names()
        again = ShmArray.attach(shm.token)
        assert len(again) == 5
        again.close()


_OWNER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from engine.shm import ShmArray, ohlc_dtype
    mode = sys.argv[1]
    shm = ShmArray.create(ohlc_dtype, 1024)
    print(shm.name, flush=True)
    if mode == "exit":
        sys.exit(0)
    if mode == "raise":
        raise RuntimeError("strategy blew up")
    if mode == "with-raise":
        with ShmArray.create(ohlc_dtype, 8) as other:
            print(other.name, flush=True)
            raise RuntimeError("inside a with block")
    sys.stdin.readline()  # wait for SIGINT / SIGKILL
    """
)


@pytest.mark.parametrize("mode", ["exit", "raise", "with-raise", "sigint", "sigterm", "sigkill"])
def test_no_segment_outlives_its_owner(mode):
    proc = subprocess.Popen([sys.executable, "-c", _OWNER, mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    assert name.startswith("engine_")
    sig = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}.get(mode)
    if sig is not None:
        assert name in shm_names()
        proc.send_signal(sig)
    proc.communicate(timeout=30)
    if sig is signal.SIGKILL:
        # The owner's resource tracker outlives it by a moment and removes the segment.
        import time

        deadline = time.monotonic() + 10
        while name in shm_names() and time.monotonic() < deadline:
            time.sleep(0.02)
    left = segments_of(proc.pid)
    assert not left, f"{mode}: left {sorted(left)}"


_WRITER = textwrap.dedent(
    """
    import sys, json
    import numpy as np
    from engine.shm import ShmArray, ohlc_dtype
    n = int(sys.argv[1])
    shm = ShmArray.create(ohlc_dtype, 2 * n + 2)
    print(shm.token.model_dump_json(), flush=True)
    sys.stdin.readline()
    row = np.zeros(1, dtype=ohlc_dtype)
    for i in range(n):
        # Every field of a row is derived from its time, so a torn row is detectable.
        row["time"] = i + 1
        row["open"] = row["high"] = row["low"] = row["close"] = 3.0 * (i + 1)
        row["volume"] = row["bar_wap"] = 7.0 * (i + 1)
        row["count"] = 11 * (i + 1)
        if i % 2:
            shm.push(row)
        else:
            shm.prepend(row)
    print("done", flush=True)
    sys.stdin.readline()
    """
)


def test_a_reader_never_sees_a_half_written_row():
    n = 50_000
    with subprocess.Popen([sys.executable, "-c", _WRITER, str(n)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as proc:
        reader = ShmArray.attach(ShmToken.model_validate_json(proc.stdout.readline()))
        proc.stdin.write("go\n")
        proc.stdin.flush()
        checks = 0
        while len(reader) < n:
            arr = reader.array
            t = arr["time"].astype(np.float64)
            assert (t > 0).all()
            assert (arr["close"] == 3.0 * t).all()
            assert (arr["open"] == 3.0 * t).all()
            assert (arr["bar_wap"] == 7.0 * t).all()
            assert (arr["count"] == 11 * arr["time"]).all()
            checks += 1
        assert proc.stdout.readline().strip() == "done"
        assert checks > 1
        reader.close()
        proc.communicate("bye\n", timeout=30)
