"""Whole-series indicator calls recorded instead of computed: the plan of a fast-path `signals`.

Inside `tracing()`, `Indicator.run` given stand-ins (`Stand`: a bar field, or an output of
another recorded call) records the call and returns stand-ins for its outputs instead of
computing. A streamed run (`engine.backtests._streamed`) then feeds each recorded indicator
the bars chunk by chunk with `update`, which gives exactly the outputs of one whole pass
(tests/kernels/test_kernels_incremental.py): the record array is read once, while its rows
are in cache, instead of once per column and again per indicator.

Any other use of a stand-in (numpy arithmetic, indexing, `len`, an attribute) raises
`NotPlanned`; the caller then runs `signals` on real arrays. Nothing here computes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["NotPlanned", "Stand", "Calc", "Rows", "tracing", "tracing_now", "record"]

_local = threading.local()


class NotPlanned(Exception):
    """A stand-in was used as something other than an indicator's input."""


class Stand:
    """Stands for a series while `signals` is traced: bar field `field`, or output `k` of
    recorded call `calc`."""

    __slots__ = ("field", "calc", "k")
    __array_ufunc__ = None  # numpy arithmetic on it fails instead of making object arrays

    def __init__(self, field: str | None = None, calc: Calc | None = None, k: int = 0) -> None:
        self.field = field
        self.calc = calc
        self.k = k

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise NotPlanned("a traced series used as an array")

    __array__ = __len__ = __getitem__ = __iter__ = __bool__ = __float__ = __int__ = _refuse
    __index__ = __neg__ = __abs__ = __add__ = __radd__ = __sub__ = __rsub__ = _refuse
    __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __pow__ = __lt__ = __gt__ = _refuse
    __le__ = __ge__ = _refuse

    def __getattr__(self, name: str) -> Any:
        raise NotPlanned(f"a traced series has no {name!r} until it is computed")

    def __repr__(self) -> str:
        what = self.field if self.calc is None else f"{self.calc.indicator!r} output {self.k}"
        return f"Stand({what})"


@dataclass(eq=False)
class Calc:
    """One recorded call: a fresh indicator of its own, its input stand-ins, its outputs."""

    indicator: Any
    inputs: tuple[Stand, ...]
    outputs: tuple[Stand, ...]


class Rows:
    """What a traced `signals` receives in place of the bars: `rows["close"]` is a stand-in,
    `len(rows)` the number of bars; anything else is refused."""

    def __init__(self, names: tuple[str, ...], n: int) -> None:
        self._names = names
        self._n = n

    def __getitem__(self, name: str) -> Stand:
        if name not in self._names:
            raise NotPlanned(f"no bar field {name!r}")
        return Stand(field=name)

    def __len__(self) -> int:
        return self._n

    def __getattr__(self, name: str) -> Any:
        raise NotPlanned(f"the traced bars have no {name!r}")


@contextmanager
def tracing() -> Iterator[list[Calc]]:
    """Record, in this thread until the block ends, the indicator calls made on stand-ins;
    the list yielded receives them in the order made (every input before its users)."""
    before = getattr(_local, "calcs", None)
    calcs: list[Calc] = []
    _local.calcs = calcs
    try:
        yield calcs
    finally:
        _local.calcs = before


def tracing_now() -> bool:
    return getattr(_local, "calcs", None) is not None


def record(indicator: Any, series: tuple, out: Any) -> Stand | tuple[Stand, ...]:
    """`indicator.run(*series, out=out)` recorded: stand-ins for its outputs."""
    if out is not None or not all(type(s) is Stand for s in series):
        raise NotPlanned("an indicator over stand-ins mixed with arrays, or written to out=")
    if len(series) != len(indicator.inputs):
        raise NotPlanned(f"{type(indicator).__name__} takes {len(indicator.inputs)} series")
    fresh = indicator.copy()
    fresh.reset()
    calc = Calc(fresh, tuple(series), ())
    calc.outputs = tuple(Stand(calc=calc, k=k) for k in range(len(indicator.outputs)))
    _local.calcs.append(calc)
    return calc.outputs[0] if len(calc.outputs) == 1 else calc.outputs
