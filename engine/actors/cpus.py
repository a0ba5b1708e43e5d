"""Where a run's actors run: the feed daemon on a CPU of its own, the strategy actors on the
others (the root and the clearing actor stay wherever the OS puts them).

A quote reaches a strategy actor as the daemon rings its doorbell. When both share a CPU, the
woken actor waits for the daemon to finish its batch (sampler, other lanes) before it runs; when
the OS moves either one between CPUs, their caches go cold. Measured on the 2-core machine at
10k ticks/s (benchmarks/actors.py), keeping them apart cut the tick-to-on_quote p99 from
458-514 us to 230-268 us, and the median by half. A machine with one usable CPU, or a run asked not to (`pin_cpus=False`,
`engine run --actors --no-pin`), leaves placement to the OS. The CPUs are taken from this
process's own affinity, so `taskset` around `engine run` still decides which CPUs are used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["CpuPlan", "plan_cpus", "pin_this_process", "describe"]

log = logging.getLogger("engine.actors")


@dataclass(frozen=True)
class CpuPlan:
    """The CPUs of the feed daemon and of the strategy actors; None: where the OS puts them."""

    feed: tuple[int, ...] | None = None
    strategies: tuple[int, ...] | None = None


def plan_cpus(allowed: Iterable[int] | None = None) -> CpuPlan:
    """The feed daemon on the last of `allowed` (default: the CPUs this process may use), the
    strategy actors on the rest; no placement with fewer than two."""
    if allowed is None:
        try:
            allowed = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux: nothing to place
            return CpuPlan()
    cpus = sorted(set(allowed))
    if len(cpus) < 2:
        return CpuPlan()
    return CpuPlan(feed=(cpus[-1],), strategies=tuple(cpus[:-1]))


def pin_this_process(cpus: Sequence[int] | None, who: str) -> None:
    """Keep this process on `cpus` (nothing when None); a refusal is logged, never fatal."""
    if not cpus:
        return
    try:
        os.sched_setaffinity(0, set(cpus))
    except (AttributeError, OSError) as exc:
        log.warning("%s: could not keep to CPU %s (%s); the OS places it", who,
                    ",".join(map(str, cpus)), exc)


def describe(plan: CpuPlan, *, shared_feed: bool = False) -> str:
    """The summary's line: where the run put its actors (a shared feed daemon was placed by
    the run that started it)."""
    if plan.feed is None or plan.strategies is None:
        return "CPUs: placed by the OS"
    strategies = f"strategy actors on {','.join(map(str, plan.strategies))}"
    if shared_feed:
        return f"CPUs: {strategies} (the shared feed daemon is where its own run put it)"
    return f"CPUs: feed daemon on {','.join(map(str, plan.feed))}, {strategies}"
