"""The indicators a strategy can declare (`ctx.indicator(kind, ...)`), described for people.

Reads the indicator classes' own signatures and docstrings, so the list cannot drift from the
code; it computes nothing.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

__all__ = ["IndicatorInfo", "list_indicators"]


@dataclass(frozen=True)
class IndicatorInfo:
    """One indicator: its `kind` (what `ctx.indicator` takes), its parameters as
    `name=default` text (no default: required), the bar fields (or lines) it reads, the lines
    it outputs, and the first sentence of its description."""

    kind: str
    params: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    summary: str

    def signature(self) -> str:
        return f"{self.kind}({', '.join(self.params)})"


def _summary(doc: str | None) -> str:
    text = " ".join(line.strip() for line in (doc or "").strip().split("\n\n")[0].splitlines())
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


def list_indicators() -> list[IndicatorInfo]:
    """Every indicator kind with its parameters, inputs and outputs, in declaration order."""
    from engine.kernels._indicators import KINDS

    out = []
    for kind, cls in KINDS.items():
        params = []
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
            params.append(p.name if p.default is inspect.Parameter.empty
                          else f"{p.name}={p.default!r}")
        out.append(IndicatorInfo(kind, tuple(params), tuple(cls.inputs), tuple(cls.outputs),
                                 _summary(cls.__doc__)))
    return out
