"""One fast-path run streamed: the bars read once, a chunk at a time, on two cores.

`plan` traces a strategy's `signals` (`engine.kernels._plan`). When every signal it returns is
a bar field or an indicator over bar fields or over other such indicators, `run` computes
them a chunk of bars at a time with `update` (exactly the values of one whole pass) and runs
the decision loop over each chunk as soon as its signals are there. The indicators read the
record array's fields in place: a chunk's rows come from memory once, for the first
indicator, and from cache for the rest and for the loop, where a whole-series run copies the
open and close columns out first and then reads each column again per indicator.

With two cores a helper thread computes indicators chunk after chunk while the caller's runs
the loop, and the caller computes what the helper has not reached yet when it gets to a chunk
(each indicator still takes its chunks in order). The kernels and the loop release the GIL.
Signals that are not planned (numpy arithmetic on a series, indexing) are computed whole by
`run_fast`, as before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.kernels import _plan
from engine.kernels._shared import in_shared_pool

__all__ = ["Plan", "plan", "run"]

# Bars a chunk: its rows (72 bytes each) stay in this machine's 32 MB cache while its
# indicators and the loop read them, and a run of 1M bars makes 16 hand-overs between threads.
CHUNK = 1 << 16


@dataclass
class Plan:
    calcs: list[_plan.Calc]  # the indicators the signals need, every input before its users
    outputs: tuple[_plan.Stand, ...]  # the signals, in the order `signals` returns them


def plan(cls: Any, bars: Any, raw: tuple) -> Plan | None:
    """The plan of `cls.signals(bars, *raw)`, or None when it must be computed whole."""
    if not isinstance(bars, np.ndarray) or bars.dtype.names is None or not len(bars):
        return None
    names = bars.dtype.names
    if not {"open", "close"} <= set(names) or any(bars.dtype[f] != np.float64
                                                  for f in ("open", "close")):
        return None
    with _plan.tracing() as calcs:
        try:
            got = cls.signals(_plan.Rows(names, len(bars)), *raw)
        except Exception:
            return None  # computed whole, where an error of the strategy's shows as itself
    if not isinstance(got, tuple | list) or not got:
        return None
    outputs = tuple(got)
    if not all(type(s) is _plan.Stand for s in outputs):
        return None
    # Only what the signals read: an indicator `signals` made and dropped is not computed.
    needed: set[int] = set()
    todo = [s.calc for s in outputs if s.calc is not None]
    while todo:
        calc = todo.pop()
        if id(calc) not in needed:
            needed.add(id(calc))
            todo.extend(s.calc for s in calc.inputs if s.calc is not None)
    return Plan([c for c in calcs if id(c) in needed], outputs)


def run(p: Plan, bars: np.ndarray, loop_over: Callable[[tuple], Any]) -> tuple[float, Any]:
    """Run the loop over the bars with the planned signals: `loop_over(signals)` is the
    loop's run (`fastpath._Series`), advanced a chunk at a time; returns its result."""
    n, chunk = len(bars), CHUNK
    columns = {name: bars[name] for name in bars.dtype.names}
    series: dict[_plan.Stand, np.ndarray] = {}
    for calc in p.calcs:
        for s in calc.outputs:
            series[s] = np.empty(n)
    # A bar field returned as a signal: copied out a chunk at a time, as its rows are read.
    copies = [s for s in p.outputs if s.calc is None]
    for s in copies:
        series[s] = np.empty(n)
    sigs = tuple(series[s] for s in p.outputs)

    # Task t = c * k + j computes indicator j over chunk c. Each thread goes through the
    # chunks in order and takes every task of a chunk the other has not taken: the helper,
    # with no loop to run, gets ahead and takes most; the caller takes what is left of a
    # chunk when it gets there. A task waits for the same indicator's previous chunk (its
    # state carries over) and for its inputs' tasks of the same chunk.
    bounds = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    k = len(p.calcs)
    index = {id(calc): j for j, calc in enumerate(p.calcs)}
    inputs = [[index[id(s.calc)] for s in calc.inputs if s.calc is not None]
              for calc in p.calcs]
    taken = bytearray(len(bounds) * k)
    done = [threading.Event() for _ in range(len(bounds) * k)]
    lock = threading.Lock()
    failed: list[BaseException] = []
    stop = False

    def wait(t: int) -> None:
        done[t].wait()
        if failed:
            raise failed[0]
        if stop:
            raise _Stopped

    def work(c: int) -> None:
        lo, hi = bounds[c]
        for j, calc in enumerate(p.calcs):
            t = c * k + j
            with lock:
                if taken[t]:
                    continue
                taken[t] = 1
            if c:
                wait(t - k)
            for d in inputs[j]:
                wait(c * k + d)
            ins = tuple(columns[s.field][lo:hi] if s.calc is None else series[s][lo:hi]
                        for s in calc.inputs)
            outs = tuple(series[s][lo:hi] for s in calc.outputs)
            calc.indicator.update(*ins, out=outs if len(outs) > 1 else outs[0])
            done[t].set()

    def helper_work() -> None:
        try:
            for c in range(len(bounds)):
                work(c)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the caller, which raises it
            failed.append(exc)
            for event in done:
                event.set()

    looping = loop_over(sigs)
    threaded = k and len(bounds) > 1 and (os.cpu_count() or 1) > 1 and not in_shared_pool()
    worker = threading.Thread(target=helper_work, name="fastpath-signals", daemon=True) \
        if threaded else None
    if worker is not None:
        worker.start()
    try:
        for c, (lo, hi) in enumerate(bounds):
            work(c)
            for s in copies:
                series[s][lo:hi] = columns[s.field][lo:hi]
            for t in range(c * k, c * k + k):
                wait(t)
            looping.to(hi)
    finally:
        if worker is not None:
            stop = True
            for event in done:  # a helper waiting for a task of the caller's stops there
                event.set()
            worker.join()
    return looping.result()


class _Stopped(Exception):
    """The caller's run ended (raised or was interrupted): the helper stops where it is."""
