"""Prove a strategy's warm-up: its indicators over the last bars of the data, computed after N and
after 2N bars of history, must agree (freqtrade's recursive analysis, as a function).

Two replays of the same strategy differ only in how much history comes before the window they
are compared on; every indicator the strategy declared through `ctx.indicator` is read over that
window in both. An indicator whose values differ needs more warm-up than N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.backtests.replay import BacktestError, load_data, run_backtest
from engine.live import resolve_strategy
from engine.strategy import Strategy, StrategyError
from engine.warmup import strategy_warmup

__all__ = ["WarmupLine", "WarmupReport", "check_warmup"]

# Values equal to this relative tolerance are the same signal: two replays of one kernel over
# the same bars differ only where the history before them does.
REL_TOL = 1e-9


@dataclass(frozen=True)
class WarmupLine:
    """One declared indicator output over the compared window: its largest absolute and
    relative difference between the two warm-ups, and whether NaNs fall on the same bars."""

    name: str
    max_abs: float
    max_rel: float
    nan_mismatch: int

    @property
    def ok(self) -> bool:
        return self.nan_mismatch == 0 and self.max_rel <= REL_TOL


@dataclass
class WarmupReport:
    """The warm-up `bars` (N) checked, the strategy's own figure (`derived`), the `window`
    of bars compared, and every declared line's comparison."""

    strategy: str
    derived: int
    bars: int
    window: int
    lines: list[WarmupLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.lines)

    def table(self) -> str:
        out = [f"{self.strategy}: warm-up {self.bars} bars checked against {2 * self.bars} "
               f"(derived {self.derived}), last {self.window} bars compared"]
        for line in self.lines:
            verdict = "PASS" if line.ok else "FAIL"
            why = "" if line.ok else (
                f"  {line.nan_mismatch} bars NaN in one run only" if line.nan_mismatch
                else f"  differs by up to {line.max_abs:.3g} ({line.max_rel:.2g} relative)")
            out.append(f"  {verdict}  {line.name}{why}")
        if not self.lines:
            out.append("  (no indicators declared through ctx.indicator)")
        return "\n".join(out)


def _snapshot_class(cls: type[Strategy], window: int, sink: dict) -> type[Strategy]:
    """`cls` with an on_stop that copies every declared line's last `window` values (while the
    replay's bars still exist) and the derived warm-up."""

    def on_stop(self: Any) -> Any:
        ctx = self.ctx
        lines = []
        for src in ctx._sources:
            n = ctx._seen[src.key][0]
            src.catch_up(n)
            ind = src.indicator
            params = ", ".join(map(str, ind._params()))
            on, w = src.symbol, window
            if src.key != src.symbol:  # a higher timeframe: its bars in the window
                on = f"{src.symbol} {ctx._tf_labels[src.key[1]]}"
                w = max(1, window // (src.key[1] // ctx.timeframe))
            for k, name in enumerate(ind.outputs):
                label = f"{ind.kind}({params}) {name} on {on}"
                lo = max(n - w, src.drop)
                lines.append((label, np.array(src.values_of(lo, n, k), dtype=float)))
        sink["lines"] = lines
        sink["warmup"] = strategy_warmup(self)
        return cls.on_stop(self)

    return type(cls.__name__, (cls,), {"on_stop": on_stop, "__module__": cls.__module__})


def _replay(strategy: Any, params: dict | None, bars: dict[str, np.ndarray], first: int,
            trade_from: int, window: int) -> dict:
    base = type(resolve_strategy(strategy, params))
    sink: dict = {}
    snap = _snapshot_class(base, window, sink)
    snap.__source_path__ = getattr(base, "__source_path__", None)  # type: ignore[attr-defined]
    strat = snap(**(params or {}))
    # A symbol whose data ends before the window is left out (nothing of it is compared).
    part = {s: p for s, b in bars.items() if len(p := b[b["time"] >= first])}
    run_backtest(strat, part, trade_from=trade_from, bootstrap=False, log_level="error")
    return sink


def check_warmup(strategy: str | Path | type[Strategy], data: Any, *,
                 params: dict | None = None, bars: int | None = None, window: int | None = None,
                 **load: Any) -> WarmupReport:
    """Replay `strategy` on `data` twice, with `bars` (default: its derived warm-up) and with
    twice as many bars of history before the last `window` bars (default: as many as the
    warm-up, at least 20), and compare every declared indicator there. `load` takes
    `load_data`'s options (symbols, provider, timeframe, start, end)."""
    try:
        name = type(resolve_strategy(strategy, params)).__name__
    except StrategyError as exc:
        raise BacktestError(str(exc)) from None
    data_bars, _ = load_data(data, **load)
    times = np.unique(np.concatenate([b["time"] for b in data_bars.values()]))
    probe = _replay(strategy, params, data_bars, int(times[0]), int(times[0]), 1)
    derived = int(probe["warmup"])
    n = int(bars) if bars is not None else max(derived, 1)
    if n < 1:
        raise BacktestError(f"warm-up bars must be positive, got {n}")
    k = int(window) if window is not None else max(n, 20)
    if len(times) < 2 * n + k:
        raise BacktestError(f"the data has {len(times)} bars; checking a warm-up of {n} over "
                            f"{k} bars needs {2 * n + k} (--bars or --window smaller, or more "
                            "data)")
    trade_from = int(times[-k])
    short = _replay(strategy, params, data_bars, int(times[-k - n]), trade_from, k)
    long = _replay(strategy, params, data_bars, int(times[-k - 2 * n]), trade_from, k)
    report = WarmupReport(name, derived, n, k)
    for (label, a), (_, b) in zip(short["lines"], long["lines"], strict=True):
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        both = ~nan_a & ~nan_b
        diff = np.abs(a[both] - b[both])
        scale = np.maximum(np.abs(b[both]), 1e-300)
        report.lines.append(WarmupLine(
            label, float(diff.max()) if len(diff) else 0.0,
            float((diff / scale).max()) if len(diff) else 0.0,
            int((nan_a != nan_b).sum())))
    if any(not math.isfinite(x.max_rel) for x in report.lines):
        raise BacktestError("an indicator produced non-finite differences")
    return report
