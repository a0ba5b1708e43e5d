"""The engine across processes and hosts, with tractor actors.

- `run_actors` (`engine run --actors a.py b.py`; `engine.actors.root.run` from sync code): a
  feed daemon actor owns the provider, feed, sampler and shared memory; each strategy runs in
  its own supervised actor that attaches the bars read-only in place and gets quotes through a
  shared-memory lane (`engine.actors.ring`); a clearing actor owns the paper accounts. A second run on the same machine
  shares the feed daemon through tractor's registry.
- `run_sweep` (`engine.actors.sweep.sweep` from sync code): parameter combinations fanned out
  over a pool of worker actors (also on other hosts), each attaching the same history segments
  read-only.

Names load on first use: importing this package does not start or import tractor.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_actors": "engine.actors.root",
    "ActorRunResult": "engine.actors.plan",
    "Backoff": "engine.actors.supervise",
    "run_sweep": "engine.actors.sweep",
    "parse_grid": "engine.actors.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine.actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
