"""Indicator lines a strategy declares once and reads by bar: `self.fast = ctx.indicator("sma", 10)`.

A `Line` is a kernel's output over a symbol's closed bars. It computes lazily and incrementally:
when the strategy reads it, bars closed since the last read are fed to the kernel's state form,
so a replay over a million bars and a live run one bar at a time give the same values. It only
ever shows values of bars the strategy can see, so reading it cannot look ahead.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["Line", "make_lines"]

log = logging.getLogger("engine.indicators")


class _Source:
    """One kernel over one symbol's bars (or over other lines of them), shared by the lines of
    its outputs.

    Bar k (counted from the context's origin) is absolute row `origin + k` of the symbol's
    segment. Values are kept for the newest `cap` bars at most: value k sits at `out[k - drop]`,
    and when the arrays fill, the newest half moves to the front (in place, so lines holding
    the arrays keep them), as the bar segment itself does when it rolls.
    """

    def __init__(self, ctx: Any, symbol: str, indicator: Any, fields: tuple[str, ...],
                 lines: tuple[Line, ...] = (), key: Any = None) -> None:
        # The context's count of visible bars for this series (the lines read it); the
        # context itself is not kept: it keeps its sources, and a cycle would outlive the run.
        self.seen = ctx._seen[key if key is not None else symbol]
        self.symbol = symbol
        self.key = symbol if key is None else key  # the series: symbol, or (symbol, seconds)
        self.indicator = indicator
        self.fields = fields
        self.lines = lines  # input lines, when the kernel reads indicators instead of fields
        self.shm = ctx._bars[self.key]
        self.origin = ctx._origin[self.key]
        self.cap = max(2, self.shm.size)
        self.out = tuple(np.full(self.cap, np.nan) for _ in indicator.outputs)
        self.done = 0  # bars fed to the kernel
        self.drop = 0  # values dropped from the front of `out`
        # Lines read bar n (counted from 1) straight from the values while n <= ready[0]:
        # computed, and nothing dropped from the front yet (a cell the lines share).
        self.ready = [0]

    def catch_up(self, upto: int, memo: dict | None = None) -> None:
        # Feed every stored bar not yet fed, in one kernel call: the kernel is causal, so values
        # of bars the strategy cannot see yet exist but are never shown (no look-ahead), and a
        # replay pays one call for the whole history instead of one per bar. `memo`: the
        # columns copied so far by the catch-up this one is part of.
        if upto <= self.done:
            return
        if memo is None:
            memo = {}
        first, last = self.shm.span()
        upto = max(upto, last - self.origin)
        if self.lines:
            for line in self.lines:
                line._src.catch_up(upto, memo)
            lo = max(line._src.drop for line in self.lines)
        else:
            lo = first - self.origin
        if self.done < lo:
            # The bars (or input values) after the last fed one rolled out before anyone read
            # this line: start the kernel afresh on what is held (its warm-up shows as NaN).
            log.warning("indicator %s on %s was not read for %d bars, more than the bars kept; "
                        "restarting it from the oldest bar held", type(self.indicator).__name__,
                        self.symbol, lo - self.done)
            self.indicator.reset()
            for o in self.out:
                o[:] = np.nan
            self.done = self.drop = lo
            self._tell()
        self._make_room(self.done, upto)
        if self.lines:
            ins = tuple(line._src.values_of(self.done, upto, line._k) for line in self.lines)
        else:
            span = (self.key, self.origin + self.done, self.origin + upto)
            bars = self.shm.rows(*span[1:])
            # Contiguous copies: numba compiles a kernel once per array layout, and a field of
            # one row is contiguous where one of many is strided; one layout means the kernel
            # compiled (or loaded) at start-up serves every later bar. Indicators caught up
            # together (the averages a cross reads) share one copy of a field.
            for f in self.fields:
                if (span, f) not in memo:
                    memo[span, f] = np.ascontiguousarray(bars[f])
            ins = tuple(memo[span, f] for f in self.fields)
        lo, hi = self.done - self.drop, upto - self.drop
        if hi <= self.cap:
            outs = tuple(o[lo:hi] for o in self.out)
            self.indicator.update(*ins, out=outs if len(outs) > 1 else outs[0])
        else:
            # More new bars than the arrays hold: compute them all, keep the newest.
            tmp = tuple(np.full(upto - self.done, np.nan) for _ in self.out)
            self.indicator.update(*ins, out=tmp if len(tmp) > 1 else tmp[0])
            for o, t in zip(self.out, tmp, strict=True):
                o[:] = t[len(t) - self.cap:]
            self.drop = upto - self.cap
        self.done = upto
        self._tell()

    def _tell(self) -> None:
        self.ready[0] = self.done if self.drop == 0 else 0

    def _make_room(self, done: int, upto: int) -> None:
        # Before writing values done..upto: if they would run past the arrays, move the newest
        # half of the values held (those before `done`) to the front.
        if upto - self.drop <= self.cap:
            return
        keep = max(0, min(done - self.drop, self.cap // 2 - (upto - done)))
        new_drop = done - keep
        for o in self.out:
            o[:keep] = o[done - self.drop - keep:done - self.drop]
            o[keep:] = np.nan
        self.drop = new_drop
        self._tell()

    def values_of(self, lo: int, hi: int, k: int) -> np.ndarray:
        """Values lo..hi of output k (bars counted from the origin), all held and computed."""
        return self.out[k][lo - self.drop:hi - self.drop]


class Line:
    """The values of one indicator output on the strategy's visible bars, oldest first.

    `line[-1]` is the value at the newest closed bar, `line[-2]` the one before (NaN during
    warm-up); `line.values` is a read-only array of all of them; `len(line)` counts them.
    """

    __slots__ = ("_src", "_k", "_seen", "_sym", "_out", "_ready")

    def __init__(self, source: _Source, k: int) -> None:
        self._src = source
        self._k = k
        self._seen = source.seen
        self._sym = source.symbol
        # A memoryview of the values: indexing it gives a Python float without a method call
        # (the arrays are only ever rewritten in place, so the view stays valid).
        self._out = memoryview(source.out[k])
        self._ready = source.ready

    def __len__(self) -> int:
        return self._seen[0]

    def __getitem__(self, i: int) -> float:
        # The hot path of every on_bar, kept to the fewest operations: the newest bar, when
        # it is computed and nothing has rolled out, read straight from the values.
        n = self._seen[0]
        if i == -1 and 0 < n <= self._ready[0]:
            return self._out[n - 1]
        src = self._src
        if src.done < n:
            src.catch_up(n)
        drop = src.drop
        if i == -1 and n > drop:
            return self._out[n - 1 - drop]  # the newest value, held and visible
        if i < 0:
            i += n
            if i < 0:
                raise IndexError(f"bar {i - n} is before the first of {n} closed bars")
        elif i >= n:
            raise IndexError(f"bar {i} is not visible yet ({n} closed bars)")
        if i < drop:
            raise IndexError(f"bar {i} rolled out: this line keeps bars {drop} to "
                             f"{src.done - 1}, and the strategy is at bar {n - 1}")
        return self._out[i - drop]

    @property
    def values(self) -> np.ndarray:
        """The values held (all of them until the bars roll; then the newest), read-only."""
        n = len(self)
        self._src.catch_up(n)
        view = self._src.out[self._k][:max(0, n - self._src.drop)].view()
        view.flags.writeable = False
        return view

    def __repr__(self) -> str:
        ind = self._src.indicator
        return f"Line({type(ind).__name__} {ind.outputs[self._k]} on {self._sym}, {len(self)} bars)"


def make_lines(ctx: Any, kind: str, params: tuple, symbol: str | None,
               fields: tuple[str, ...] | None, options: dict | None = None,
               timeframe: str | None = None) -> Line | tuple[Line, ...]:
    """The lines of indicator `kind` over `symbol`'s bar `fields` on `timeframe` (None: the
    finest), or, when its inputs are given as lines among `params`
    (`ctx.indicator("cross", fast, slow)`), over those lines (and their timeframe)."""
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
        keys = {line._src.key for line in lines}
        if len(keys) > 1:
            raise ValueError(f"{kind}: input lines must be on one timeframe")
        symbol = lines[0]._sym
        key = lines[0]._src.key
    else:
        symbol = symbol or ctx.symbols[0]
        if symbol not in ctx._bars:
            raise KeyError(f"no bars for {symbol!r}; this run has {ctx.symbols}")
        key = ctx._key(symbol, timeframe)
    indicator = cls(*params, **(options or {}))
    fields = tuple(fields) if fields else tuple(cls.inputs)
    if not lines and len(fields) != len(cls.inputs):
        raise ValueError(f"{kind} reads {len(cls.inputs)} fields ({', '.join(cls.inputs)}), "
                         f"got {fields}")
    source = _Source(ctx, symbol, indicator, fields, lines, key)
    ctx._sources.append(source)  # what the strategy declared: its warm-up reads them
    out = tuple(Line(source, k) for k in range(len(cls.outputs)))
    return out[0] if len(out) == 1 else out
