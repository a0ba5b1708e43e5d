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
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from engine.clearing._core import A_CASH, apply_fill
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
    def loop(open_, close, sigs, params, cash, commission, slippage, fills):
        """Replay one series; return (final equity, fills written). fills rows: bar, signed
        size, price, fee."""
        account = np.zeros(3)
        account[A_CASH] = cash
        positions = np.zeros((1, 4))
        n = open_.shape[0]
        pending = np.nan
        nf = 0
        for i in range(n):
            if not math.isnan(pending):
                pos = positions[0, 0]
                o = open_[i]
                if pos != 0.0:
                    q = -pos
                    # The clearing core's arithmetic, term for term: same bits as the event path.
                    px = o + slippage * o if q > 0 else o - slippage * o
                    fee = commission * px * abs(q)
                    apply_fill(account, positions, 0, q, px, fee)
                    fills[nf, 0] = i
                    fills[nf, 1] = q
                    fills[nf, 2] = px
                    fills[nf, 3] = fee
                    nf += 1
                if pending != 0.0:
                    q = pending
                    px = o + slippage * o if q > 0 else o - slippage * o
                    fee = commission * px * abs(q)
                    apply_fill(account, positions, 0, q, px, fee)
                    fills[nf, 0] = i
                    fills[nf, 1] = q
                    fills[nf, 2] = px
                    fills[nf, 3] = fee
                    nf += 1
                pending = np.nan
            target = decide(i, positions[0, 0], sigs, params)
            if not math.isnan(target) and target != positions[0, 0]:
                pending = target
        return account[A_CASH] + positions[0, 0] * close[n - 1], nf

    return loop


_loops: dict[Any, Any] = {}


def _adapter(cls: type[VectorStrategy]) -> Any:
    """A jitted (i, position, sigs tuple, params tuple) -> target wrapper around cls.decide."""
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
    """The bars as contiguous columns, made once per series: kernels run ~3x faster on them
    than on the strided fields of the record array, and a sweep reuses them for every set."""

    def __init__(self, bars: np.ndarray) -> None:
        super().__init__()
        self._bars = bars

    def __missing__(self, name: str) -> np.ndarray:
        col = np.ascontiguousarray(self._bars[name])
        self[name] = col
        return col

    def __len__(self) -> int:
        return len(self._bars)


def _prepare(cls: type[VectorStrategy], bars: Any, params: dict) -> tuple:
    model = cls.validate_params(params)
    values = tuple(float(v) if isinstance(v, int | float) else v for v in model.model_dump().values())
    sigs = tuple(np.ascontiguousarray(s, dtype=np.float64)
                 for s in cls.signals(bars, *model.model_dump().values()))
    cls._n_signals = len(sigs)
    return sigs, values


def run_fast(cls: type[VectorStrategy], bars: np.ndarray, params: dict | None = None, *,
             cash: float = 100_000.0, commission: float = 0.0, slippage: float = 0.0
             ) -> dict:
    """Run one parameter set on the fast path; return final equity and the fills."""
    sigs, values = _prepare(cls, _Columns(bars), params or {})
    loop = _adapter(cls)
    fills = np.zeros((2 * len(bars) + 2, 4))
    open_ = np.ascontiguousarray(bars["open"], dtype=np.float64)
    close = np.ascontiguousarray(bars["close"], dtype=np.float64)
    final, nf = loop(open_, close, sigs, values, cash, commission, slippage, fills)
    return {"final_equity": float(final), "fills": fills[:nf].copy()}


def sweep_fast(cls: type[VectorStrategy], bars: np.ndarray, grid: list[dict], *,
               cash: float = 100_000.0, commission: float = 0.0, slippage: float = 0.0,
               workers: int | None = None) -> np.ndarray:
    """Final equity of every parameter set in `grid`. Signals are computed per set; the jitted
    loops release the GIL and run on `workers` threads (default: one per core)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    if not grid:
        return np.zeros(0)
    columns = _Columns(bars)
    open_ = np.ascontiguousarray(columns["open"], dtype=np.float64)
    close = np.ascontiguousarray(columns["close"], dtype=np.float64)
    _prepare(cls, columns, grid[0])
    loop = _adapter(cls)

    def one(params: dict) -> float:
        sigs, values = _prepare(cls, columns, params)
        fills = np.zeros((2 * len(bars) + 2, 4))
        return loop(open_, close, sigs, values, cash, commission, slippage, fills)[0]

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return np.array(list(pool.map(one, grid)))
