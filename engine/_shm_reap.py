"""Removal of shared-memory segments whose creating process is dead.

Segment names carry the creating pid (`engine_<pid>_<hex>`). A process that dies with its whole
process group (kill -9 of the group takes its resource tracker too) leaves its segments in
/dev/shm; the first segment any later engine process creates removes them (`reap_once`).

A segment is removed only when its creator is certainly gone: no process has that pid, or the
process that has it is a zombie, or it started after the segment was made (the pid was reused:
the pid belonged to the creator when the segment was made, so a process holding it since then
is the creator). Start times come from /proc (boot time plus clock ticks, good to a second), so
a process counts as the creator unless it started more than `engine._pids.SLACK` seconds after
the segment. Only segments of this user are touched. This never removes a segment of a live
process in this pid namespace; an engine in another pid namespace sharing this /dev/shm would
look dead.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from engine._pids import boot_time, maker_gone

__all__ = ["reap", "reap_once"]

log = logging.getLogger("engine.shm")

SHM_DIR = Path("/dev/shm")
_PREFIX = "engine_"

_done = False
_lock = threading.Lock()


def _creator(name: str) -> int | None:
    try:
        return int(name[len(_PREFIX):].split("_", 1)[0])
    except ValueError:
        return None


def reap(directory: Path = SHM_DIR) -> list[str]:
    """Remove this user's `engine_<pid>_*` segments whose creator is dead; return their names."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(_PREFIX)]
        boot = boot_time()
    except OSError:
        return []  # no /dev/shm or no /proc: nothing we can judge safely
    uid = os.getuid()
    removed = []
    for name in names:
        pid = _creator(name)
        if pid is None or pid == os.getpid():
            continue
        path = directory / name
        try:
            st = path.stat()
        except OSError:
            continue  # removed meanwhile
        if st.st_uid != uid:
            continue
        # mtime is set when the segment is made (create, ftruncate); writes through the mapping
        # leave it, and were it ever later, the creator would only look alive for longer.
        if not maker_gone(pid, st.st_mtime, boot):
            continue  # its creator is alive
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not remove stale segment %s: %s", name, exc)
            continue
        removed.append(name)
    if removed:
        log.info("removed %d shared-memory segment(s) of dead engine processes: %s",
                 len(removed), ", ".join(sorted(removed)))
    return removed


def reap_once() -> None:
    """Run `reap` the first time this process calls it; later calls return at once."""
    global _done
    if _done:
        return
    with _lock:
        if _done:
            return
        _done = True
    reap()
