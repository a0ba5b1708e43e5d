"""The sweep's history in shared memory: each symbol's rows copied once into a segment that
every worker on this host attaches read-only by token. Nothing here starts a worker."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from engine.shm import ShmArray

__all__ = ["open_history", "tokens_of"]


@contextmanager
def open_history(arrays: Mapping[str, np.ndarray]) -> Iterator[dict[str, ShmArray]]:
    """Copy each symbol's rows into a shared-memory segment, once, for every worker to attach;
    the segments are unlinked on exit."""
    made: dict[str, ShmArray] = {}
    try:
        for sym, rows in arrays.items():
            shm = ShmArray.create(rows.dtype, max(1, len(rows)), start=0)
            shm.push(rows)
            made[sym] = shm
        yield made
    finally:
        for shm in made.values():
            shm.close()
            shm.unlink()


def tokens_of(history: Mapping[str, ShmArray]) -> dict[str, dict[str, Any]]:
    """Each symbol's segment token, as plain data a worker attaches by."""
    return {sym: shm.token.model_dump() for sym, shm in history.items()}
