"""Whether the process that made something named for its pid (a shared-memory segment, a spill
directory) is certainly gone.

A pid names its maker only while the maker lives: once it dies the pid may be reused. So the
maker counts as alive when a live (non-zombie) process has the pid and started no later than
the thing was made, give or take `SLACK` (start times from /proc are boot time plus clock ticks,
good to about a second). Reads /proc only; removes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SLACK", "boot_time", "started", "maker_gone"]

# Start times from /proc are whole boot seconds plus clock ticks: good to about a second.
SLACK = 1.5


def boot_time() -> float:
    """Epoch seconds the machine booted (raises OSError without /proc)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def started(pid: int, boot: float) -> float | None:
    """Epoch seconds when `pid` started, or None when no live (non-zombie) process has it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None  # dead, waiting for its parent to reap it
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def maker_gone(pid: int, made: float, boot: float) -> bool:
    """Whether the process `pid` that made something at epoch seconds `made` is certainly
    dead: no live process has the pid, or the one that has it started after `made` (reused).
    `made` may be later than the making (an mtime): the maker then only looks alive longer."""
    since = started(pid, boot)
    return since is None or since > made + SLACK
