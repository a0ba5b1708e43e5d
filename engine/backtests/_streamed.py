"""One fast-path run streamed: the bars read once, a chunk at a time, on two cores.

`plan` traces a strategy's `signals` (`engine.kernels._plan`). When every signal it returns is
a bar field or an indicator over bar fields or over other such indicators, `run` computes them a chunk of
bars at a time with `update` (exactly the values of one whole pass) and runs the decision
loop over each chunk as soon as its signals are there. The indicators read the record array's
fields in place: a chunk's rows come from memory once, for the first indicator, and from cache
for the rest and for the loop, where a whole-series run copies the open and close columns out
first and then reads each column again per indicator.

With two cores the indicators are split between a helper thread and the caller's, which also
runs the loop: chunk c's loop waits for the helper's chunk c only. The kernels and the loop
release the GIL. Signals that are not planned (numpy arithmetic on a series, indexing) are
computed whole by `run_fast`, as before.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.clearing._core import A_CASH
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


def run(p: Plan, loop: Any, bars: np.ndarray, values: tuple, cash: float, commission: float,
        slippage: float, fill_rows: int) -> tuple[float, np.ndarray]:
    """Run `loop` over the bars with the planned signals: (final equity, fills)."""
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

    threaded = len(p.calcs) > 1 and n > chunk and (os.cpu_count() or 1) > 1 \
        and not in_shared_pool()
    helper: list[_plan.Calc] = []
    own: list[tuple[_plan.Calc, bool]] = []  # with: reads one of the helper's
    for calc in p.calcs:
        reads_helper = any(s.calc is not None and s.calc in helper for s in calc.inputs)
        reads_own = any(s.calc is not None and s.calc not in helper for s in calc.inputs)
        # The loop is the caller's share: the helper takes the first indicator, then every
        # other one that reads nothing of the caller's.
        if threaded and not reads_own and len(helper) <= len(own):
            helper.append(calc)
        else:
            own.append((calc, reads_helper))

    def update(calc: _plan.Calc, lo: int, hi: int) -> None:
        ins = tuple(columns[s.field][lo:hi] if s.calc is None else series[s][lo:hi]
                    for s in calc.inputs)
        outs = tuple(series[s][lo:hi] for s in calc.outputs)
        calc.indicator.update(*ins, out=outs if len(outs) > 1 else outs[0])

    bounds = [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]
    ready = [threading.Event() for _ in bounds]
    failed: list[BaseException] = []
    stop = False

    def helper_work() -> None:
        try:
            for c, (lo, hi) in enumerate(bounds):
                if stop:
                    return
                for calc in helper:
                    update(calc, lo, hi)
                ready[c].set()
        except BaseException as exc:  # handed to the caller, which raises it
            failed.append(exc)
            for event in ready:
                event.set()

    def wait(c: int) -> None:
        ready[c].wait()
        if failed:
            raise failed[0]

    account = np.zeros(3)
    account[A_CASH] = cash
    positions = np.zeros((1, 4))
    pending = np.full(1, np.nan)
    buf = np.empty((fill_rows, 4))
    parts = []
    open_, close = columns["open"], columns["close"]
    worker = threading.Thread(target=helper_work, name="fastpath-signals", daemon=True) \
        if helper else None
    if worker is not None:
        worker.start()
    try:
        i = 0
        for c, (lo, hi) in enumerate(bounds):
            waited = worker is None
            for calc, reads_helper in own:
                if reads_helper and not waited:
                    wait(c)
                    waited = True
                update(calc, lo, hi)
            for s in copies:
                series[s][lo:hi] = columns[s.field][lo:hi]
            if not waited:
                wait(c)
            while i < hi:
                i, nf = loop(open_[:hi], close[:hi], sigs, values, account, positions, pending,
                             commission, slippage, buf, i)
                parts.append(buf[:nf].copy())
    finally:
        stop = True
        if worker is not None:
            worker.join()
    final = account[A_CASH] + positions[0, 0] * close[n - 1]
    return final, parts[0] if len(parts) == 1 else np.concatenate(parts)
