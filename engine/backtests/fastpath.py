"""The numba fast path: strategies whose decision is a jitted function over signal arrays run
entirely inside numba, with the same fill rules as the event-driven replay, for sweeps.

The form (see `strategies/sma_cross_fast.py`):

    class SmaCrossFast(VectorStrategy):
        fast: int = 10
        slow: int = 30
        size: float = 10.0

        @staticmethod
        def signals(bars, fast, slow, size):        # plain Python, once per run
            close = bars["close"]
            return kernels.sma(close, fast), kernels.sma(close, slow)

        @staticmethod
        @njit(cache=True)
        def decide(i, position, fast, slow, size):  # numba, once per closed bar
            ...return the target position in units, or NaN to leave it

`signals` receives the bars and every parameter (in declaration order) and returns a tuple of
float arrays, each causal (the value at bar i uses bars 0..i only). `decide` receives the bar
index, the current position and then each signal array and each parameter, and returns the
target position. A change of target is traded the way the event path does it: close the
position, then open the new one, both at market, filled at the next bar's open with slippage
(fraction of price) and commission (fraction of notional), through the clearing core's
`apply_fill`. So both paths give the same trades, to the cent.

One run (`run_fast`) streams when it can: signals that are kernel indicators of the bars are
computed a chunk at a time beside the loop (`engine.backtests._streamed`). A sweep
(`sweep_fast`) computes each distinct series whole, once, and shares it between the sets.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
from numba import njit

from engine.backtests import _streamed
from engine.clearing._core import A_CASH, apply_fill
from engine.kernels._common import prefetch
from engine.strategy import Strategy

__all__ = ["VectorStrategy", "run_fast", "sweep_fast"]


class VectorStrategy(Strategy):
    """A strategy with `signals` and a jitted `decide` (see the module docstring). It runs on
    the event path like any strategy, and on the fast path (`run_fast`, sweeps) unchanged."""

    def on_start(self) -> None:
        shm = self.ctx._bars[self.ctx.symbols[0]]
        values = tuple(self.params.model_dump().values())
        # Causal signals over every stored bar; decide() only ever reads index <= i.
        self._signals = type(self).signals(shm.array, *values)
        self._values = values

    def on_bar(self, symbol: str) -> None:
        i = len(self.ctx.ohlcv(symbol)) - 1
        pos = self.ctx.position(symbol)
        target = type(self).decide(i, pos, *self._signals, *self._values)
        if math.isnan(target) or target == pos:
            return
        if pos != 0:
            self.ctx.close(symbol)
        if target > 0:
            self.ctx.buy(symbol, target)
        elif target < 0:
            self.ctx.sell(symbol, -target)

    @staticmethod
    def signals(bars: np.ndarray, *params: Any) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    @staticmethod
    def decide(i: int, position: float, *args: Any) -> float:
        raise NotImplementedError


def _make_loop(decide: Any) -> Any:
    @njit(cache=False, nogil=True)
    def loop(open_, close, sigs, params, account, positions, pending, commission, slippage,
             fills, start):
        """Replay bars `start`.. of one series, carrying the account, positions and the
        pending target (`pending[0]`, NaN: none) in their arrays. With `fills` (rows: bar,
        signed size, price, fee), fills are written to it and the loop stops early, returning
        the bar to resume at, when it has no room for a bar's two; without (no rows), it runs
        to the end. Returns (the bar to resume at, fills made)."""
        n = open_.shape[0]
        record = fills.shape[0] > 0
        room = fills.shape[0] - 2
        nf = 0
        target_ = pending[0]
        for i in range(start, n):
            prefetch(open_, i + _AHEAD)
            if not math.isnan(target_):
                if record and nf > room:
                    pending[0] = target_
                    return i, nf
                pos = positions[0, 0]
                o = open_[i]
                if pos != 0.0:
                    q = -pos
                    # The clearing core's arithmetic, term for term: same bits as the event path.
                    px = o + slippage * o if q > 0 else o - slippage * o
                    fee = commission * px * abs(q)
                    apply_fill(account, positions, 0, q, px, fee)
                    if record:
                        fills[nf, 0] = i
                        fills[nf, 1] = q
                        fills[nf, 2] = px
                        fills[nf, 3] = fee
                    nf += 1
                if target_ != 0.0:
                    q = target_
                    px = o + slippage * o if q > 0 else o - slippage * o
                    fee = commission * px * abs(q)
                    apply_fill(account, positions, 0, q, px, fee)
                    if record:
                        fills[nf, 0] = i
                        fills[nf, 1] = q
                        fills[nf, 2] = px
                        fills[nf, 3] = fee
                    nf += 1
                target_ = np.nan
            target = decide(i, positions[0, 0], sigs, params)
            if not math.isnan(target) and target != positions[0, 0]:
                target_ = target
        pending[0] = target_
        return n, nf

    return loop


class _Series:
    """One run of a loop (`_make_loop`) over a series, advanced a stretch at a time (`to`):
    the account, the position and the pending target carried from one stretch to the next,
    and the fills, when recorded, gathered through a small buffer reused call after call
    instead of one reserved for the most fills a series could make (two a bar: 64 MB for 1M
    bars)."""

    def __init__(self, loop: Any, open_: np.ndarray, close: np.ndarray, sigs: tuple,
                 values: tuple, cash: float, commission: float, slippage: float,
                 record: bool) -> None:
        self._loop, self._open, self._close = loop, open_, close
        self._args = (sigs, values)
        self._costs = (commission, slippage)
        self._account = np.zeros(3)
        self._account[A_CASH] = cash
        self._positions = np.zeros((1, 4))
        self._pending = np.full(1, np.nan)
        self._buf = np.empty((_FILL_CHUNK, 4)) if record else _NO_FILLS
        self._parts: list[np.ndarray] | None = [] if record else None
        self._i = 0

    def to(self, hi: int) -> None:
        """Run the bars before `hi`."""
        while self._i < hi:
            self._i, nf = self._loop(self._open[:hi], self._close[:hi], *self._args,
                                     self._account, self._positions, self._pending,
                                     *self._costs, self._buf, self._i)
            if self._parts is not None:
                self._parts.append(self._buf[:nf].copy())

    def result(self) -> tuple[float, np.ndarray | None]:
        """The final equity (at the last close), and the fills when recorded."""
        final = self._account[A_CASH] + self._positions[0, 0] * self._close[-1]
        parts = self._parts
        if parts is None:
            return final, None
        return final, parts[0] if len(parts) == 1 else np.concatenate(parts)


def _run_series(loop: Any, open_: np.ndarray, close: np.ndarray, sigs: tuple, values: tuple,
                cash: float, commission: float, slippage: float, record: bool
                ) -> tuple[float, np.ndarray | None]:
    """Run `loop` over the whole series: final equity, and the fills when `record`ed."""
    series = _Series(loop, open_, close, sigs, values, cash, commission, slippage, record)
    series.to(open_.shape[0])
    return series.result()


_NO_FILLS = np.empty((0, 4))
_FILL_CHUNK = 1 << 14  # rows of fills a loop call writes before handing them over (512 KB)


# Bars ahead the loop asks the cache for the open it may fill at: fills come at unpredictable
# bars, and a miss on the record array in shared memory costs more than the loop's bar.
_AHEAD = 16

_loops: dict[Any, Any] = {}
_loops_lock = threading.Lock()


def _adapter(cls: type[VectorStrategy]) -> Any:
    """A jitted (i, position, sigs tuple, params tuple) -> target wrapper around cls.decide."""
    with _loops_lock:
        if cls in _loops:
            return _loops[cls]
        decide = cls.decide
        n_sig = cls._n_signals
        n_par = len(cls.param_names())
        args = ", ".join([f"s[{k}]" for k in range(n_sig)] + [f"p[{k}]" for k in range(n_par)])
        src = f"def call(i, pos, s, p):\n    return decide(i, pos, {args})\n"
        scope: dict[str, Any] = {"decide": decide}
        exec(src, scope)  # noqa: S102 - a fixed-arity trampoline numba can compile
        loop = _make_loop(njit(scope["call"]))
        _loops[cls] = loop
        return loop


class _Columns(dict):
    """The bars as contiguous columns, each made once per series on first use: kernels run
    ~3x faster on them than on the strided fields of the record array, and a sweep reuses them
    (read-only) for every set."""

    def __init__(self, bars: np.ndarray) -> None:
        super().__init__()
        self._bars = bars
        self._lock = threading.Lock()

    def __missing__(self, name: str) -> np.ndarray:
        with self._lock:
            if name not in self:
                col = np.ascontiguousarray(self._bars[name])
                col.setflags(write=False)
                self[name] = col
            return dict.__getitem__(self, name)

    def __len__(self) -> int:
        return len(self._bars)


def _values(cls: type[VectorStrategy], params: dict) -> tuple[tuple, tuple]:
    """The parameters as `signals` takes them, and as floats for `decide`."""
    raw = tuple(cls.validate_params(params).model_dump().values())
    return raw, tuple(float(v) if isinstance(v, int | float) else v for v in raw)


def _prepare(cls: type[VectorStrategy], bars: Any, params: dict) -> tuple:
    raw, values = _values(cls, params)
    sigs = tuple(s if isinstance(s, np.ndarray) and s.dtype == np.float64
                 and s.flags.c_contiguous else np.ascontiguousarray(s, dtype=np.float64)
                 for s in cls.signals(bars, *raw))
    cls._n_signals = len(sigs)
    return sigs, values


@njit(cache=True, nogil=True)
def _two_columns(a, b, out_a, out_b):
    # Both fields in one pass: they share each row's cache line, so this costs one pass over
    # the record array where two copies cost two.
    for i in range(a.shape[0]):
        out_a[i] = a[i]
        out_b[i] = b[i]


def _prices(bars: np.ndarray, columns: _Columns | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Open and close as contiguous float64 columns (kept in `columns` for `signals`)."""
    if bars.dtype.names is None or not {"open", "close"} <= set(bars.dtype.names):
        raise TypeError("bars must be a record array with open and close fields")
    if columns is not None and ("open" in columns or "close" in columns):
        return columns["open"], columns["close"]
    a, b = bars["open"], bars["close"]
    if a.dtype != np.float64 or b.dtype != np.float64:
        open_, close = a.astype(np.float64), b.astype(np.float64)
    else:
        open_, close = np.empty(len(bars)), np.empty(len(bars))
        _two_columns(a, b, open_, close)
    for col in (open_, close):
        col.setflags(write=False)
    if columns is not None:
        dict.__setitem__(columns, "open", open_)
        dict.__setitem__(columns, "close", close)
    return open_, close


def run_fast(cls: type[VectorStrategy], bars: np.ndarray, params: dict | None = None, *,
             cash: float = 100_000.0, commission: float = 0.0, slippage: float = 0.0
             ) -> dict:
    """Run one parameter set on the fast path; return final equity and the fills.

    Signals that are indicators of the bars are computed a chunk at a time beside the loop
    (`engine.backtests._streamed`); others whole, then the loop."""
    raw, values = _values(cls, params or {})
    plan = _streamed.plan(cls, bars, raw)
    if plan is not None:
        cls._n_signals = len(plan.outputs)
        loop = _adapter(cls)
        final, fills = _streamed.run(plan, bars, lambda sigs: _Series(
            loop, bars["open"], bars["close"], sigs, values, cash, commission, slippage, True))
        return {"final_equity": float(final), "fills": fills}
    columns = _Columns(bars)
    open_, close = _prices(bars, columns)
    sigs, values = _prepare(cls, columns, params or {})
    loop = _adapter(cls)
    final, fills = _run_series(loop, open_, close, sigs, values, cash, commission, slippage, True)
    return {"final_equity": float(final), "fills": fills}


def sweep_fast(cls: type[VectorStrategy], bars: np.ndarray, grid: list[dict], *,
               cash: float = 100_000.0, commission: float = 0.0, slippage: float = 0.0,
               workers: int | None = None, stats: dict | None = None) -> np.ndarray:
    """Final equity of every parameter set in `grid`, in grid order.

    One worker thread per core (or `workers`) takes sets from a shared queue; the jitted loops
    and kernels release the GIL. The bars' columns are made once, and every whole-series
    kernel call in `signals` (`kernels.sma(close, 20)`) is computed once per distinct call and
    shared, read-only, by every set that makes it (see `engine.kernels._shared`). `stats`, when
    given, receives how many series were computed and how many calls reused one."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from engine.kernels._shared import SeriesPool, sharing

    if not grid:
        return np.zeros(0)
    columns = _Columns(bars)
    open_, close = _prices(bars, columns)
    series = SeriesPool()
    with sharing(series):
        _prepare(cls, columns, grid[0])
    loop = _adapter(cls)

    def one(params: dict) -> float:
        with sharing(series):
            sigs, values = _prepare(cls, columns, params)
        return _run_series(loop, open_, close, sigs, values, cash, commission, slippage, False)[0]

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        out = np.array(list(pool.map(one, grid)))
    if stats is not None:
        stats.update(series=series.misses, reused=series.hits)
    return out
