"""Signal outputs in shared memory: derived series kept beside the bars they come from.

A `SignalSet` reads an OHLCV buffer (a `ShmArray`, possibly attached read-only from the process
that writes it) and keeps every series a strategy declares, such as `ema_20` over `close`, as a
float64 field of a `ShmArray` of its own. Signal row i belongs to source row i (same `index`,
same `time`), so a reader in any process attaches by token and lines bars and signals up by row:

    sigs = SignalSet.create(bars, {"ema_20": ("ema", "close", 20), "rsi": ("rsi", 14)})
    feed.subscribe(sigs.on_bars)            # or call sigs.update() whenever bars close
    reader = ShmArray.attach(sigs.token)    # another process: reader.array["ema_20"]

`update()` computes the rows the source gained since the last call, in time proportional to
them (each series keeps its kernel's state), writing straight into shared memory. When the
source rolls (a live bar segment keeping its newest half), the signals roll with it: their
segment moves the same rows to the same places (same `base`, see `engine.shm`), and the kernels
go on from their state. When history arrives before the first row (a prepend) or the source's
rows are replaced (bounds that shrink, or bar times that moved at either end of what was
computed), it recomputes every row in place; a writer that revises bars without moving those
times calls `recompute()`. The source is only read; nothing here does I/O beyond shared memory
or awaits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.shm import ShmArray, ShmToken

__all__ = ["Signal", "SignalSet", "SignalError", "open_signals", "parse_signals"]

Spec = Sequence[Any]  # (kind, *input fields, *parameters), e.g. ("ema", "close", 20)


class SignalError(ValueError):
    """A signal declaration is malformed or refers to an unknown kind or field."""


@dataclass(frozen=True)
class Signal:
    """One declared series: its kernel kind, the fields it reads, its parameters, and the
    fields it writes (its name, or name_<output> for a kernel with several outputs)."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: tuple[Any, ...]
    fields: tuple[str, ...]

    def indicator(self) -> Any:
        """Return a fresh indicator (an `engine.kernels.Indicator`) for this series."""
        from engine import kernels

        return kernels.KINDS[self.kind](*self.params)


def parse_signals(specs: Mapping[str, Spec], source_fields: Sequence[str]) -> list[Signal]:
    """Validate declarations against the source's fields and return them in order.

    A spec is `(kind, *inputs, *params)`: `kind` names a kernel (`engine.kernels.KINDS`), the
    inputs are field names (all of them, or none for the kernel's defaults such as high, low
    and close for ATR), and the parameters follow. An input may name a source field or a field
    of a series declared earlier, so signals chain (`("crossover", "ema_12", "ema_26")`).
    """
    from engine import kernels

    known = set(source_fields)
    taken = {"index", "time"}
    out: list[Signal] = []
    for name, spec in specs.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SignalError(f"signal name {name!r} is not an identifier")
        if isinstance(spec, str):
            spec = (spec,)
        if not isinstance(spec, Sequence) or not spec or not isinstance(spec[0], str):
            raise SignalError(f"signal {name!r}: expected (kind, *inputs, *params), got {spec!r}")
        kind, rest = spec[0], tuple(spec[1:])
        cls = kernels.KINDS.get(kind)
        if cls is None:
            raise SignalError(
                f"signal {name!r}: unknown kind {kind!r}; known: {', '.join(sorted(kernels.KINDS))}"
            )
        n_str = 0
        while n_str < len(rest) and isinstance(rest[n_str], str):
            n_str += 1
        if n_str == 0:
            inputs = cls.inputs
        elif n_str == len(cls.inputs):
            inputs = rest[:n_str]
        else:
            raise SignalError(
                f"signal {name!r}: {kind} reads {len(cls.inputs)} fields "
                f"({', '.join(cls.inputs)}), got {n_str}: {rest[:n_str]}"
            )
        params = rest[n_str:]
        for field in inputs:
            if field not in known:
                raise SignalError(
                    f"signal {name!r}: no field {field!r} in the source or in earlier signals"
                )
        try:
            cls(*params)
        except (TypeError, ValueError) as exc:
            raise SignalError(f"signal {name!r}: {exc}") from None
        fields = (name,) if len(cls.outputs) == 1 else tuple(f"{name}_{o}" for o in cls.outputs)
        for field in fields:
            if field in taken or field in known:
                raise SignalError(f"signal {name!r}: field {field!r} is already taken")
            taken.add(field)
        known.update(fields)
        out.append(Signal(name, kind, tuple(inputs), tuple(params), fields))
    return out


class SignalSet:
    """Declared series over one OHLCV buffer, kept in a `ShmArray` aligned row for row.

    The set owns its segment (it unlinks it on `close`); readers attach with
    `ShmArray.attach(signal_set.token)`. Build it with `SignalSet.create` or `open_signals`.
    """

    def __init__(self, source: ShmArray, signals: list[Signal], shm: ShmArray) -> None:
        self.source = source
        self.signals = signals
        self.shm = shm
        self._indicators = [s.indicator() for s in signals]
        src_fields = set(source.dtype.names or ())
        self._has_time = "time" in src_fields
        # Where each indicator reads: the source's buffer or this set's own.
        self._reads = [
            tuple(("source" if f in src_fields else "self", f) for f in s.inputs) for s in signals
        ]
        # Rows computed: absolute indices [first, last) of the source, and its times there.
        self._first = self._last = source.first_index
        self._stamp: tuple[float, float] = (np.nan, np.nan)  # source times at first and last-1

    @classmethod
    def create(
        cls, source: ShmArray, specs: Mapping[str, Spec], *, name: str | None = None
    ) -> SignalSet:
        """Declare `specs` over `source`, compute them over its current rows and return the set.

        `name` names the shared-memory segment (default: generated).
        """
        if source.dtype.names is None:
            raise SignalError("the source must be a structured ShmArray")
        signals = parse_signals(specs, source.dtype.names)
        fields: list[tuple[str, Any]] = [("index", np.int64)]
        if "time" in source.dtype.names:
            fields.append(("time", source.dtype["time"]))
        fields += [(f, np.float64) for s in signals for f in s.fields]
        shm = ShmArray.create(np.dtype(fields), source.size, name=name, start=source.first)
        try:
            shm.reset(start=source.first, base=source.base)  # row for row with the source
            sigs = cls(source, signals, shm)
            sigs.update()
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        return sigs

    # -- reading ---------------------------------------------------------------------------------

    @property
    def token(self) -> ShmToken:
        """What another process needs to attach to the signals (`ShmArray.attach`)."""
        return self.shm.token

    @property
    def fields(self) -> tuple[str, ...]:
        """The float64 fields the set writes, in declaration order."""
        return tuple(f for s in self.signals for f in s.fields)

    @property
    def array(self) -> np.ndarray:
        """The computed rows (a view into shared memory, aligned with the source's)."""
        return self.shm.array

    # -- computing -------------------------------------------------------------------------------

    def update(self, upto: int | None = None) -> int:
        """Compute the source rows added since the last call and return how many were written.

        `upto` stops before that absolute row index (the buffer row while the source never
        rolled; default: the source's last row), to leave out a bar that is still forming. If
        the source gained history before its first row or had its rows replaced, every row is
        recomputed in place.
        """
        src = self.source
        epoch = src.epoch
        n = self._update(upto)
        if src.epoch != epoch:
            # The source rolled while we read it (a writer in another process): read again.
            n = self._recompute(*self._bounds(upto))
        return n

    def _bounds(self, upto: int | None) -> tuple[int, int, int]:
        first, last, base = self.source.bounds()
        first, last = base + first, base + last
        if upto is not None:
            last = max(first, min(last, upto))
        return first, last, base

    def _update(self, upto: int | None) -> int:
        first, last, base = self._bounds(upto)
        if first < self._first or last < self._last or self._replaced(first, base):
            return self._recompute(first, last, base)
        if self.shm.base != base or first > self._first:
            if self._last < first:
                return self._recompute(first, last, base)  # fell behind the roll
            self.shm.rebase(base, first)  # the source rolled: move our rows as it moved its
            self._first = first
        if last == self._last:
            return 0
        lo = self._last
        self._compute(lo - base, last - base, fresh=False)
        self.shm.push(self.shm.buffer[lo - base:last - base])
        self._last = last
        self._remember(first, last, base)
        return last - lo

    def recompute(self) -> int:
        """Recompute every row from a fresh state; return how many were written."""
        return self._recompute(*self._bounds(None))

    def on_bars(self, quotes: object = None, closed: object = None) -> None:
        """Update: a `Feed.subscribe` callback (its arguments are ignored)."""
        self.update()

    def _recompute(self, first: int, last: int, base: int) -> int:
        self.shm.reset(start=first - base, base=base)
        self._compute(first - base, last - base, fresh=True)
        self.shm.push(self.shm.buffer[first - base:last - base])
        self._first, self._last = first, last
        self._remember(first, last, base)
        return last - first

    def _compute(self, lo: int, hi: int, *, fresh: bool) -> None:
        # lo..hi are buffer positions, the same in both segments (they share `base`).
        buf = self.shm.buffer
        src = self.source.buffer
        if self._has_time:
            buf["time"][lo:hi] = src["time"][lo:hi]
        for sig, ind, reads in zip(self.signals, self._indicators, self._reads, strict=True):
            ins = [(src if where == "source" else buf)[f][lo:hi] for where, f in reads]
            outs = tuple(buf[f][lo:hi] for f in sig.fields)
            if fresh:
                ind.reset()
            ind.update(*ins, out=outs)

    def _remember(self, first: int, last: int, base: int) -> None:
        if self._has_time and last > first:
            times = self.source.buffer["time"]
            self._stamp = (float(times[first - base]), float(times[last - 1 - base]))

    def _replaced(self, first: int, base: int) -> bool:
        # The same bounds over different rows (a buffer reset in place): the times at the ends
        # of what was computed moved. An end that rolled out is not compared.
        if not self._has_time or self._last <= self._first or self._last - 1 < first:
            return False
        times = self.source.buffer["time"]
        if float(times[self._last - 1 - base]) != self._stamp[1]:
            return True
        return self._first >= first and float(times[self._first - base]) != self._stamp[0]

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap and remove the segment; attached readers keep their mapping."""
        self.shm.close()
        self.shm.unlink()

    def __enter__(self) -> SignalSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SignalSet({', '.join(self.fields)}; rows {self._first}..{self._last})"


@asynccontextmanager
async def open_signals(
    source: ShmArray, specs: Mapping[str, Spec], *, name: str | None = None
) -> AsyncIterator[SignalSet]:
    """Create a `SignalSet` over `source` for the duration of the block, then remove it."""
    sigs = SignalSet.create(source, specs, name=name)
    try:
        yield sigs
    finally:
        sigs.close()
