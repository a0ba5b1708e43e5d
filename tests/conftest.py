"""Fixtures shared by the whole suite: the shared-memory leak guard and the real-data locator."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

SHM_DIR = Path("/dev/shm")

# Commands the suite starts run in their own processes, whatever engine daemon the machine's
# user has running (tests/engine/test_daemon.py starts its own and lifts this).
os.environ["ENGINE_NO_DAEMON"] = "1"


def shm_names() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith("engine_")}


def creator(name: str) -> int | None:
    """The pid in a segment's name (`engine_<pid>_<hex>`), or None."""
    try:
        return int(name.split("_")[1])
    except (IndexError, ValueError):
        return None


def segments_of(*pids: int) -> set[str]:
    """Segments in /dev/shm made by these processes: what a test that started them checks,
    never the whole of /dev/shm, where other engines on the machine keep theirs."""
    wanted = set(pids)
    return {n for n in shm_names() if creator(n) in wanted}


def _ours(name: str) -> bool:
    """A segment made by this process, a descendant of it, or a process now gone; segments of
    unrelated processes running beside the suite are theirs to account for."""
    pid = creator(name)
    if pid is None:
        return True
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True  # gone: whoever made it died and left it
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@pytest.fixture(autouse=True)
def no_shm_leak():
    """Every test must leave /dev/shm as it found it, as far as its own segments go.

    Only segments that appeared during the test count (so an engine's start-up removal of dead
    processes' segments, which can shrink /dev/shm below `before`, never trips it), and of
    those only segments of this process, its descendants, or processes now gone.
    """
    before = shm_names()
    yield
    import gc

    gc.collect()
    leaked = {n for n in shm_names() - before if _ours(n)}
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"


def shared_data_dir() -> Path | None:
    """The project's real market data (../shared/data), or None when it is absent."""
    env = os.environ.get("ENGINE_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path


class Overruns(logging.Handler):
    """Sets `flagged` when the watchdog reports a callback holding the event loop, and keeps
    those messages."""

    def __init__(self) -> None:
        super().__init__()
        self.flagged = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "has held the event loop" in message:
            self.messages.append(message)
            self.flagged.set()


@pytest.fixture
def overruns():
    """The watchdog's reports of callbacks holding the event loop, while the test runs."""
    handler = Overruns()
    logger = logging.getLogger("engine.scheduler")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
