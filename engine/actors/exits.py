"""How a child process ended, in words: for actors (tractor) and for the local sweep's plain
worker processes alike; importing it does not import tractor."""

from __future__ import annotations

import signal

__all__ = ["describe_exit"]


def describe_exit(returncode: int | None) -> str:
    """Say how a process ended: `exited with status 1`, `killed by SIGKILL`."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"
