"""Indicator lines a strategy declares once and reads by bar: `self.fast = ctx.indicator("sma", 10)`.

A `Line` is a kernel's output over a symbol's closed bars. It computes lazily and incrementally:
when the strategy reads it, bars closed since the last read are fed to the kernel's state form,
so a replay over a million bars and a live run one bar at a time give the same values. It only
ever shows values of bars the strategy can see, so reading it cannot look ahead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Line", "make_lines"]


class _Source:
    """One kernel over one symbol's bars (or over other lines of them), shared by the lines of
    its outputs."""

    def __init__(self, ctx: Any, symbol: str, indicator: Any, fields: tuple[str, ...],
                 lines: tuple[Line, ...] = ()) -> None:
        self.ctx = ctx
        self.symbol = symbol
        self.indicator = indicator
        self.fields = fields
        self.lines = lines  # input lines, when the kernel reads indicators instead of fields
        self.shm = ctx._bars[symbol]
        self.first = self.shm.first
        n = self.shm.size
        self.out = tuple(np.full(n, np.nan) for _ in indicator.outputs)
        self.done = 0  # bars fed to the kernel

    def catch_up(self, upto: int) -> None:
        # Feed every stored bar not yet fed, in one kernel call: the kernel is causal, so values
        # of bars the strategy cannot see yet exist but are never shown (no look-ahead), and a
        # replay pays one call for the whole history instead of one per bar.
        if upto <= self.done:
            return
        upto = max(upto, self.shm.last - self.first)
        if self.lines:
            for line in self.lines:
                line._src.catch_up(upto)
            ins = tuple(line._out[self.done:upto] for line in self.lines)
        else:
            bars = self.shm.buffer[self.first + self.done:self.first + upto]
            ins = tuple(bars[f] for f in self.fields)
        outs = tuple(o[self.done:upto] for o in self.out)
        self.indicator.update(*ins, out=outs if len(outs) > 1 else outs[0])
        self.done = upto


class Line:
    """The values of one indicator output on the strategy's visible bars, oldest first.

    `line[-1]` is the value at the newest closed bar, `line[-2]` the one before (NaN during
    warm-up); `line.values` is a read-only array of all of them; `len(line)` counts them.
    """

    __slots__ = ("_src", "_k", "_seen", "_sym", "_out")

    def __init__(self, source: _Source, k: int) -> None:
        self._src = source
        self._k = k
        self._seen = source.ctx._seen[source.symbol]
        self._sym = source.symbol
        self._out = source.out[k]

    def __len__(self) -> int:
        return self._seen[0]

    def __getitem__(self, i: int) -> float:
        # The hot path of every on_bar: kept to the fewest operations.
        n = self._seen[0]
        if self._src.done < n:
            self._src.catch_up(n)
        if i < 0:
            i += n
            if i < 0:
                raise IndexError(f"bar {i - n} is before the first of {n} closed bars")
        elif i >= n:
            raise IndexError(f"bar {i} is not visible yet ({n} closed bars)")
        return self._out.item(i)

    @property
    def values(self) -> np.ndarray:
        n = len(self)
        self._src.catch_up(n)
        view = self._src.out[self._k][:n].view()
        view.flags.writeable = False
        return view

    def __repr__(self) -> str:
        ind = self._src.indicator
        return f"Line({type(ind).__name__} {ind.outputs[self._k]} on {self._sym}, {len(self)} bars)"


def make_lines(ctx: Any, kind: str, params: tuple, symbol: str | None,
               fields: tuple[str, ...] | None, options: dict | None = None
               ) -> Line | tuple[Line, ...]:
    """The lines of indicator `kind` over `symbol`'s bar `fields`, or, when its inputs are given
    as lines among `params` (`ctx.indicator("cross", fast, slow)`), over those lines."""
    from engine.kernels import KINDS

    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"no indicator {kind!r}; known: {', '.join(sorted(KINDS))}") from None
    lines = tuple(p for p in params if isinstance(p, Line))
    params = tuple(p for p in params if not isinstance(p, Line))
    if lines:
        if fields:
            raise ValueError(f"{kind}: give its inputs as lines or as fields, not both")
        if len(lines) != len(cls.inputs):
            raise ValueError(f"{kind} reads {len(cls.inputs)} inputs ({', '.join(cls.inputs)}), "
                             f"got {len(lines)} lines")
        symbols = {line._sym for line in lines}
        if len(symbols) > 1 or (symbol is not None and symbol not in symbols):
            raise ValueError(f"{kind}: input lines must be over one symbol, the indicator's "
                             f"(got {', '.join(sorted(symbols | {symbol} - {None}))})")
        symbol = lines[0]._sym
    symbol = symbol or ctx.symbols[0]
    if symbol not in ctx._bars:
        raise KeyError(f"no bars for {symbol!r}; this run has {ctx.symbols}")
    indicator = cls(*params, **(options or {}))
    fields = tuple(fields) if fields else tuple(cls.inputs)
    if not lines and len(fields) != len(cls.inputs):
        raise ValueError(f"{kind} reads {len(cls.inputs)} fields ({', '.join(cls.inputs)}), "
                         f"got {fields}")
    source = _Source(ctx, symbol, indicator, fields, lines)
    ctx._sources.append(source)  # what the strategy declared: its warm-up reads them
    out = tuple(Line(source, k) for k in range(len(cls.outputs)))
    return out[0] if len(out) == 1 else out
