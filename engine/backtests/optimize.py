"""Parameter optimization: grid sweeps and walk-forward analysis over the actor pool.

`optimize` loads the history once into shared memory and evaluates every combination of a
parameter grid with `engine.actors.sweep.run_sweep` (worker actors attach the history read-only;
other hosts may join through a registry). `walk_forward` splits the history into rolling (or
anchored) training and test windows, runs the whole grid on every training window in one pool,
picks each window's best combination by a metric, then replays that combination over its test
window. The test windows are stitched into one out-of-sample run:

- a test window sees its training bars as history (indicators warm up on them, as a live run
  warms up on its backfill) but trades only inside the test window, and starts flat;
- each test window starts with the equity the previous one ended with, so the stitched equity
  curve compounds; a position still open at a window's end is valued at that window's last close
  and listed as an open trade;
- the statistics of the stitched curve are the out-of-sample result; the in-sample metric of
  each window is reported next to it, so over-fitting shows as the gap between the two.

Across hosts, every remote result must pass `check_metrics` (what a backtest's statistics can
be) before the sweep keeps it; see `engine.actors.sweep` for the rest of that trust.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.backtests.metrics import compute_stats, drawdowns
from engine.backtests.replay import (
    SWEEP_METRICS,
    BacktestError,
    BacktestResult,
    Fills,
    _clean,
    _records,
    _spec,
    load_data,
    run_backtest,
)
from engine.live import resolve_strategy
from engine.run_spec import RunSpec
from engine.strategy import StrategyError
from engine.timefmt import iso

__all__ = ["optimize", "walk_forward", "SweepResult", "WalkForwardResult", "parse_windows",
           "expand_grid", "check_metrics", "SWEEP_METRICS"]

ProgressFn = Callable[[int, int, dict], None]


# -- the grid --------------------------------------------------------------------------------


def expand_grid(grid: Sequence[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]]
                ) -> list[dict[str, Any]]:
    """Every combination of a grid given as `-p` specs (`["fast=5:50:5", "slow=20,30"]`), as a
    mapping of name to a value or an iterable of values, or as a list of parameter dicts."""
    from engine.actors.sweep import parse_grid

    if isinstance(grid, Mapping):
        import itertools

        axes = {k: (list(v) if isinstance(v, list | tuple | range | np.ndarray) else [v])
                for k, v in grid.items()}
        return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    items = list(grid)
    if items and all(isinstance(g, Mapping) for g in items):
        return [dict(g) for g in items]
    if all(isinstance(g, str) for g in items):
        return parse_grid(items)
    raise BacktestError("grid: give -p style specs, a {name: values} mapping or a list of dicts")


def _check_grid(strategy: Any, combos: list[dict], metric: str) -> None:
    if not combos:
        raise BacktestError("the parameter grid is empty")
    if metric not in SWEEP_METRICS:
        raise BacktestError(f"unknown metric {metric!r}; choose one of {', '.join(SWEEP_METRICS)}")
    try:  # unknown names and wrong types fail here, once, with the strategy's own message
        resolve_strategy(strategy, combos[0])
    except StrategyError as exc:
        raise BacktestError(str(exc)) from None


# Data options the coordinator applies when it loads the history once; workers get the rest.
_LOADED = ("symbols", "provider", "timeframe", "start", "end", "ticks")


def _prepare(strategy: str | Path, grid: Any, metric: str, spec: RunSpec | None, data: Any,
             options: dict[str, Any]) -> tuple[str, list[dict], RunSpec, dict[str, Any]]:
    """The strategy's path, the grid's combinations, the run's description and the options
    its workers get, all checked before any worker starts."""
    path = _strategy_path(strategy)
    combos = expand_grid(grid)
    _check_grid(path, combos, metric)
    spec = _spec(spec, data, options)
    if spec.data.ticks:
        raise BacktestError("sweeps replay bars, not recorded ticks")
    worker = {k: v for k, v in spec.options().items() if k not in _LOADED}
    return path, combos, spec, worker


def _history(spec: RunSpec) -> tuple[dict[str, np.ndarray], int]:
    d = spec.data
    return load_data(d.source, symbols=d.symbols, provider=d.provider, timeframe=d.timeframe,
                     start=d.start, end=d.end)


@contextmanager
def _on_disk(strategy: Any) -> Iterator[Any]:
    """A strategy class as a file its workers load by path (written from its source when it
    was defined in a notebook or a script: see `strategy_source`), for as long as the sweep
    runs; a path as it is."""
    from engine.strategy import Strategy

    if not (isinstance(strategy, type) and issubclass(strategy, Strategy)):
        yield strategy
        return
    import tempfile

    from engine.backtests.strategy_source import StrategySourceError, strategy_file

    with tempfile.TemporaryDirectory(prefix="engine_sweep_") as folder:
        try:
            path = strategy_file(strategy, Path(folder))
        except StrategySourceError as exc:
            raise BacktestError(f"strategy {strategy.__name__}: {exc}") from None
        yield path


def _strategy_path(strategy: str | Path) -> str:
    if not isinstance(strategy, str | Path):
        raise BacktestError("sweeps run in worker processes: give the strategy as a file path "
                            "or a Strategy class")
    path = Path(strategy)
    if not path.is_file():
        raise BacktestError(f"strategy file {str(strategy)!r} does not exist")
    return str(path.resolve())


def check_metrics(metrics: dict, options: dict) -> None:
    """Raise ValueError when `metrics` cannot be a backtest's sweep statistics under `options`:
    other keys than SWEEP_METRICS, a count that is not a whole number >= 0, a share outside
    0..100 %, a drawdown above 0, negative fees or profit factor, or a return_pct other than
    (final_equity / cash - 1) * 100."""
    if set(metrics) != set(SWEEP_METRICS):
        raise ValueError(f"keys {sorted(metrics)} are not {sorted(SWEEP_METRICS)}")
    for k, v in metrics.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not math.isfinite(v)):
            raise ValueError(f"{k} = {v!r:.40} is not a finite number or None")
    n = metrics["num_trades"]
    if n is None or n < 0 or float(n) != int(n):
        raise ValueError(f"num_trades = {n!r} is not a whole number >= 0")
    for k in ("win_rate_pct", "exposure_pct"):
        if metrics[k] is not None and not 0.0 <= metrics[k] <= 100.0:
            raise ValueError(f"{k} = {metrics[k]!r} is outside 0..100")
    for k, ok in (("max_drawdown_pct", lambda v: v <= 0.0), ("fees", lambda v: v >= 0.0),
                  ("profit_factor", lambda v: v >= 0.0)):
        if metrics[k] is not None and not ok(metrics[k]):
            raise ValueError(f"{k} = {metrics[k]!r} has the wrong sign")
    final, ret, cash = metrics["final_equity"], metrics["return_pct"], options.get("cash")
    if final is not None and ret is not None and cash:
        want = (final / cash - 1.0) * 100.0
        if not math.isclose(ret, want, rel_tol=1e-9, abs_tol=1e-6):
            raise ValueError(f"return_pct {ret!r} does not match final_equity {final!r} "
                             f"(that is {want!r} %)")


def _sweep(path: str, combos: list[dict], bars: dict[str, np.ndarray], options: dict,
           job_options: list[dict] | None, *, workers: int | None, registry: str | None,
           hosts: int, progress: ProgressFn | None, secret: bytes | None,
           allow_hosts: Sequence[str], metric: str, minimize: bool) -> list[dict]:
    from engine.actors.sweep_jobs import DEFAULT_EVALUATE, SweepError, default_workers

    try:
        if registry is None:
            # This host alone: plain worker processes (no actors), so a sweep runs the same
            # from a notebook, standard input or a script without a __main__ guard.
            from engine.actors.sweep_local import local_sweep
            from engine.actors.sweep_shm import open_history, tokens_of

            with open_history(bars) as history:
                return local_sweep(path, combos, tokens_of(history),
                                   workers=default_workers() if workers is None else workers,
                                   evaluate=DEFAULT_EVALUATE, options=options,
                                   job_options=job_options, progress=progress)
        import trio

        from engine.actors.sweep import open_history, run_sweep

        with open_history(bars) as history:
            return trio.run(lambda: run_sweep(
                path, combos, history, workers=workers, options=options, registry=registry,
                hosts=hosts, progress=progress, job_options=job_options, secret=secret,
                allow_hosts=allow_hosts, check=check_metrics, rank_by=metric,
                descending=not minimize))
    except SweepError as exc:
        raise BacktestError(str(exc)) from None


# -- results ---------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """Every combination's metrics (`rows`, in grid order) and the ranking by `metric`."""

    strategy: str
    metric: str
    rows: list[dict]
    descending: bool = True
    # How the sweep ran: wall time (seconds), worker processes on this host (0: unknown, e.g.
    # hosts joined) and bars replayed per combination.
    seconds: float = math.nan
    workers: int = 0
    bars: int = 0

    @property
    def efficiency(self) -> float:
        """The share of the workers' time spent evaluating combinations: the sum of every
        combination's own evaluation time over wall time x workers (1.0: no time lost to
        start-up, hand-over or idle workers). NaN when the worker count is unknown."""
        busy = sum(r["seconds"] or 0.0 for r in self.rows if r.get("seconds") is not None)
        if not self.workers or not self.seconds > 0:
            return math.nan
        return busy / (self.seconds * self.workers)

    def speed(self) -> str:
        """One line: combinations, workers, wall time, bar-evaluations per second in all and
        per core, and the efficiency per core."""
        n = len(self.rows)
        if not self.seconds > 0:
            return f"{n} combinations"
        line = f"{n} combinations in {self.seconds:.2f} s"
        if self.workers:
            line += f" on {self.workers} worker{'s' if self.workers > 1 else ''}"
        if self.bars:
            rate = n * self.bars / self.seconds
            line += f": {_count(rate)} bar-evaluations/s"
            if self.workers:
                line += f", {_count(rate / self.workers)} per core"
        if self.workers:
            line += (f"; workers busy evaluating {self.efficiency:.0%} of the time (the rest: "
                     "start-up, hand-over, idle)")
        return line

    @property
    def ranked(self) -> list[dict]:
        """Rows that produced the metric, best first (failed rows, NaN and None left out)."""
        from engine.actors.sweep import rank

        ranked = rank(self.rows, self.metric, descending=self.descending)
        return [r for r in ranked if not _nan(r["metrics"][self.metric])]

    @property
    def best(self) -> dict | None:
        """The best combination's parameters (None when no combination produced the metric)."""
        ranked = self.ranked
        return dict(ranked[0]["params"]) if ranked else None

    @property
    def n_trials(self) -> int:
        """How many combinations the best was chosen from: those that produced the metric
        (the number of trials a deflated Sharpe ratio discounts for)."""
        return len(self.ranked)

    @property
    def deflated_sharpe(self) -> float:
        """The deflated Sharpe ratio of the best combination: the probability that its Sharpe
        ratio beats what the best of `n_trials` unskilled trials reaches by luck (Bailey and
        López de Prado 2014; the README's "Statistics"), from the variance of the trials'
        per-period Sharpe ratios. NaN when no combination produced one."""
        from engine.backtests.metrics import deflated_sharpe

        ranked = self.ranked
        srs = []
        for r in ranked:
            m = r["metrics"]
            if not _nan(m.get("sharpe")) and m.get("periods_per_year"):
                srs.append(m["sharpe"] / math.sqrt(m["periods_per_year"]))
        if not ranked or not srs:
            return math.nan
        m = ranked[0]["metrics"]
        if _nan(m.get("sharpe")) or not m.get("periods_per_year") or _nan(m.get("skew")):
            return math.nan
        return deflated_sharpe(m["sharpe"] / math.sqrt(m["periods_per_year"]),
                               int(m["periods"]), m["skew"], m["kurtosis"], len(srs),
                               float(np.var(srs, ddof=1)) if len(srs) > 1 else 0.0)

    @property
    def failed(self) -> list[dict]:
        """The rows of the combinations that raised, each with its `params` and `error`."""
        return [r for r in self.rows if r.get("error")]

    def failures(self, limit: int | None = None) -> list[str]:
        """One line per failed combination: its parameters and the last line of its error."""
        return [_failure(r) for r in self.failed[:limit]]

    def table(self, top: int = 20) -> str:
        from engine.actors.sweep import format_table

        return format_table(self.rows, self.metric, top=top, descending=self.descending)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps({"strategy": self.strategy, "metric": self.metric,
                           "best": self.best, "n_trials": self.n_trials,
                           "deflated_sharpe": _clean(self.deflated_sharpe),
                           "failed": [{"params": r["params"], "error": r["error"]}
                                      for r in self.failed],
                           "rows": _plain(self.rows)}, indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_csv(self, path: str | Path) -> None:
        from engine.actors.sweep import write_csv

        write_csv(self.rows, path)

    def __str__(self) -> str:
        return (f"{self.strategy}: {len(self.rows)} combinations, ranked by {self.metric}\n"
                f"{self.table()}")


@dataclass
class WalkForwardResult:
    """Per-window choices and the stitched out-of-sample run (`oos`, a BacktestResult)."""

    strategy: str
    metric: str
    windows: list[dict]
    oos: BacktestResult
    rows: list[dict] = field(repr=False, default_factory=list)

    @property
    def stats(self) -> dict:
        return self.oos.stats

    @property
    def equity(self) -> np.ndarray:
        return self.oos.equity

    @property
    def trades(self) -> list[dict]:
        return self.oos.trades

    @property
    def fills(self) -> Sequence:
        """The test windows' fills, in order (`OrderFilled` events, built when read)."""
        return self.oos.fills

    @property
    def failed(self) -> list[dict]:
        """The training rows that raised, each with its `params`, `error` and window
        `options` (start and end, epoch seconds)."""
        return [r for r in self.rows if r.get("error")]

    def failures(self, limit: int | None = None) -> list[str]:
        """One line per failed training combination: its window, parameters and error."""
        return [_failure(r, self.timeframe) for r in self.failed[:limit]]

    @property
    def timeframe(self) -> int | None:
        """The bar period of the run, in seconds."""
        return getattr(self.oos, "timeframe", None)

    def table(self) -> str:
        head = ["window", "train from", "test from", "test to", "best", "trials",
                f"IS {self.metric}", f"OOS {self.metric}", "OOS return %"]
        body = []
        for i, w in enumerate(self.windows, 1):
            best = " ".join(f"{k}={v}" for k, v in (w["params"] or {}).items()) or "-"
            body.append([str(i), w["train_start_iso"], w["test_start_iso"], w["test_end_iso"],
                         best, str(w["n_trials"]), _num(w["in_sample"]),
                         _num(w["out_of_sample"].get(self.metric)),
                         _num(w["out_of_sample"].get("return_pct"))])
        widths = [max(len(h), *(len(b[c]) for b in body)) for c, h in enumerate(head)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths, strict=True)) for b in body]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "metric": self.metric,
                "windows": _plain(self.windows), "out_of_sample": self.oos.to_dict()}

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        if path is not None:
            Path(path).write_text(text)
        return text

    def plot(self, path: str | Path = "walk_forward.html") -> Path:
        """Write the walk-forward report (window table, stitched out-of-sample equity, its
        statistics and trades) as one HTML file; return its path."""
        from engine.backtests.wf_report import write_wf_report

        return write_wf_report(self, path)

    def __str__(self) -> str:
        return (f"{self.strategy}: walk-forward, {len(self.windows)} windows, best by "
                f"{self.metric}\n{self.table()}\n\nout of sample, stitched:\n{self.oos.table()}")


def _count(v: float) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= size:
            return f"{v / size:.1f}{unit}"
    return f"{v:.0f}"


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _num(v: Any) -> str:
    if v is None or _nan(v):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _failure(row: dict, period: int | None = None) -> str:
    where = ""
    if row.get("options"):
        o = row["options"]
        where = f"window {iso(o.get('start'), period)}..{iso(o.get('end'), period)}: "
    params = " ".join(f"{k}={v}" for k, v in row["params"].items())
    return f"{where}{params}: {str(row['error']).strip().splitlines()[-1]}"


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return _clean(v)


# -- optimize --------------------------------------------------------------------------------


def optimize(
    strategy: str | Path | type,
    data: Any,
    grid: Sequence[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    metric: str = "sharpe",
    minimize: bool = False,
    workers: int | None = None,
    registry: str | None = None,
    hosts: int = 0,
    secret: bytes | None = None,
    allow_hosts: Sequence[str] = (),
    progress: ProgressFn | None = None,
    spec: RunSpec | None = None,
    **options: Any,
) -> SweepResult:
    """Backtest `strategy` (a file, or a Strategy class: one defined in a notebook or script
    is written out from its source for the workers) on every combination of `grid` over a
    pool of worker processes (`workers`, default one per core) and rank them by `metric`.

    `data`, `spec` and the run's `options` are `engine.backtest`'s (one run description for
    every combination). The history is loaded once into shared
    memory. With `registry` (`HOST:PORT` of this host that others reach), hosts running
    `python -m engine.actors.sweep_host --registry HOST:PORT` take jobs too; `hosts` waits for
    that many before starting; such a sweep needs `secret` (the shared secret, from
    `engine.actors.sweep_auth.load_secret`) and links only the hosts on loopback, at the
    registry's address or in `allow_hosts`. `progress(done, total, row)` hears each result."""
    import time

    with _on_disk(strategy) as strategy:
        path, combos, spec, options = _prepare(strategy, grid, metric, spec, data, options)
        bars, _ = _history(spec)
        t0 = time.perf_counter()
        rows = _sweep(path, combos, bars, options, None, workers=workers, registry=registry,
                      hosts=hosts, progress=progress, secret=secret, allow_hosts=allow_hosts,
                      metric=metric, minimize=minimize)
    return SweepResult(Path(path).name, metric, rows, descending=not minimize,
                       seconds=time.perf_counter() - t0,
                       workers=_local_workers(workers, registry, len(combos)),
                       bars=max((len(b) for b in bars.values()), default=0))


def _local_workers(workers: int | None, registry: str | None, jobs: int) -> int:
    """Worker processes a local sweep ran on (0 when hosts may have joined)."""
    if registry is not None:
        return 0
    from engine.actors.sweep_jobs import default_workers

    return max(1, min(default_workers() if workers is None else workers, jobs))


# -- walk-forward ----------------------------------------------------------------------------

_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _span(text: str | int, what: str) -> tuple[str, int]:
    """('bars', n) for a plain count, ('seconds', n) for a duration like 90d or 12w."""
    if isinstance(text, int) and not isinstance(text, bool):
        n, kind = text, "bars"
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", str(text).lower())
        if not m:
            raise BacktestError(f"walk-forward {what} {text!r}: give a bar count (500) or a "
                                "duration with a unit s, m, h, d or w (180d)")
        n = int(m.group(1)) * _SPAN_UNITS.get(m.group(2), 1)
        kind = "seconds" if m.group(2) else "bars"
    if n <= 0:
        raise BacktestError(f"walk-forward {what} {text!r} must be positive")
    return kind, n


def parse_windows(spec: str | tuple[Any, Any]) -> tuple[tuple[str, int], tuple[str, int]]:
    """`TRAIN:TEST`, each a bar count or a duration: `2000:500`, `365d:90d`."""
    if isinstance(spec, str):
        train, sep, test = spec.partition(":")
        if not sep:
            raise BacktestError(f"walk-forward {spec!r}: expected TRAIN:TEST, e.g. 2000:500 "
                                "(bars) or 365d:90d")
    else:
        train, test = spec
    return _span(train, "training window"), _span(test, "test window")


def _windows(times: np.ndarray, train: tuple[str, int], test: tuple[str, int],
             anchored: bool) -> list[tuple[int, int, int]]:
    """(train_start, test_start, test_end) as indices into the sorted unique bar times; the
    test window is [test_start, test_end). Test windows follow each other without gap or
    overlap; each training window ends where its test window starts."""
    n = len(times)

    def forward(i: int, span: tuple[str, int]) -> int:
        kind, size = span
        if kind == "bars":
            return min(i + size, n)
        return int(np.searchsorted(times, times[i] + size))

    def back(i: int, span: tuple[str, int]) -> int:
        kind, size = span
        if kind == "bars":
            return max(i - size, 0)
        return int(np.searchsorted(times, times[i] - size))

    out: list[tuple[int, int, int]] = []
    t0 = forward(0, train)
    while t0 < n:
        t1 = forward(t0, test)
        out.append((0 if anchored else back(t0, train), t0, t1))
        t0 = t1
    return out


def walk_forward(
    strategy: str | Path | type,
    data: Any,
    grid: Sequence[str] | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    windows: str | tuple[Any, Any],
    *,
    anchored: bool = False,
    metric: str = "sharpe",
    minimize: bool = False,
    workers: int | None = None,
    registry: str | None = None,
    hosts: int = 0,
    secret: bytes | None = None,
    allow_hosts: Sequence[str] = (),
    progress: ProgressFn | None = None,
    spec: RunSpec | None = None,
    **options: Any,
) -> WalkForwardResult:
    """Walk-forward optimization: `windows` is `TRAIN:TEST` (bar counts or durations such as
    `365d:90d`). Training windows roll forward by the test length (with `anchored`, every one
    starts at the first bar and grows). See the module docstring for how test windows run and
    are stitched; the other arguments are `optimize`'s."""
    with _on_disk(strategy) as strategy:
        return _walk_forward(strategy, data, grid, windows, anchored, metric, minimize,
                             workers, registry, hosts, secret, allow_hosts, progress, spec,
                             options)


def _walk_forward(strategy: Any, data: Any, grid: Any, windows: Any, anchored: bool,
                  metric: str, minimize: bool, workers: int | None, registry: str | None,
                  hosts: int, secret: bytes | None, allow_hosts: Sequence[str],
                  progress: ProgressFn | None, spec: RunSpec | None, options: dict
                  ) -> WalkForwardResult:
    path, combos, spec, options = _prepare(strategy, grid, metric, spec, data, options)
    train, test = parse_windows(windows)
    bars, period = _history(spec)
    times = np.unique(np.concatenate([b["time"] for b in bars.values()]))
    spans = _windows(times, train, test, anchored)
    if not spans:
        raise BacktestError(f"walk-forward {windows!r}: the history ({len(times)} bars) is "
                            "shorter than one training window")
    # One pool evaluates the grid on every training window.
    jobs = [(w, c) for w in range(len(spans)) for c in combos]
    job_options = [{"start": int(times[spans[w][0]]), "end": int(times[spans[w][1] - 1])}
                   for w, _ in jobs]
    rows = _sweep(path, [c for _, c in jobs], bars, options, job_options, workers=workers,
                  registry=registry, hosts=hosts, progress=progress, secret=secret,
                  allow_hosts=allow_hosts, metric=metric, minimize=minimize)
    descending = not minimize
    chosen = []
    for w in range(len(spans)):
        mine = [r for r in rows if r.get("options") == job_options[w * len(combos)]]
        result = SweepResult(Path(path).name, metric, mine, descending)
        ranked = result.ranked
        chosen.append((ranked[0]["params"], ranked[0]["metrics"][metric], len(ranked))
                      if ranked else (None, None, 0))
    return _stitch(path, bars, period, times, spans, chosen, rows, metric, spec)


def _stitch(path: str, bars: dict[str, np.ndarray], period: int, times: np.ndarray,
            spans: list[tuple[int, int, int]], chosen: list[tuple[dict | None, Any, int]],
            rows: list[dict], metric: str, spec: RunSpec) -> WalkForwardResult:
    equity = spec.account.cash
    windows, runs = [], []
    for (lo, t0, t1), (params, in_sample, trials) in zip(spans, chosen, strict=True):
        window = {"train_start": int(times[lo]), "train_end": int(times[t0 - 1]),
                  "test_start": int(times[t0]), "test_end": int(times[t1 - 1])}
        # People read ISO 8601; the epoch seconds stay beside it for programs.
        window.update({f"{k}_iso": iso(v, period) for k, v in list(window.items())})
        window.update(params=params, n_trials=trials, in_sample=in_sample, out_of_sample={})
        windows.append(window)
        if params is None or equity <= 0:
            # No combination produced the metric in training (or the account is gone):
            # the window stays flat rather than trading a guess.
            window["skipped"] = ("no combination produced the metric in training"
                                 if params is None else "no equity left")
            continue
        window_spec = spec.replace(data=bars, start=window["train_start"],
                                   end=window["test_end"], trade_from=window["test_start"],
                                   cash=equity)
        result = run_backtest(path, spec=window_spec, params=params)
        window["out_of_sample"] = {k: _clean(result.stats[k]) for k in SWEEP_METRICS}
        equity = float(result.stats["final_equity"])
        runs.append(result)
    return WalkForwardResult(Path(path).name, metric, windows,
                             _combined(runs, path, period, spec.account.cash, bars), rows)


class _Windows:
    """The fill records of the windows' runs one after another, as one `FillLog` reads (its
    length, iteration and `record(k)`), from each run's own log (rows, spilled parts
    included): a long walk-forward holds no object per fill."""

    def __init__(self, logs: list[Any]) -> None:
        self._logs = logs
        self._ends = np.cumsum([len(log) for log in logs]).tolist()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iter__(self) -> Iterator:
        for log in self._logs:
            yield from log

    def record(self, k: int) -> Any:
        w = bisect.bisect_right(self._ends, k)
        return self._logs[w].record(k - (self._ends[w - 1] if w else 0))


def _combined(runs: list[BacktestResult], path: str, period: int, cash: float,
              bars: dict[str, np.ndarray]) -> BacktestResult:
    symbols = list(bars)
    if not runs:
        empty = np.zeros(0, dtype=[("time", np.int64), ("equity", np.float64),
                                   ("drawdown_pct", np.float64)])
        stats = compute_stats(empty["time"], empty["equity"], np.zeros(0, bool), [], 0.0, cash)
        return BacktestResult(Path(path).name, {}, symbols, period, stats, [], empty, [],
                              {s: b[:0] for s, b in bars.items()})
    curve = np.concatenate([r.equity for r in runs])
    curve["drawdown_pct"] = drawdowns(curve["equity"])
    # The stitched exposure: each window's exposed share of its own bars.
    exposed = np.concatenate([np.arange(len(r.equity)) < round(r.stats["exposure_pct"] / 100.0
                                                                 * len(r.equity))
                              for r in runs])
    trades = [t for r in runs for t in r.trades]
    fees = float(sum(r.stats["fees"] for r in runs))
    stats = compute_stats(curve["time"], curve["equity"], exposed, trades, fees, cash)
    traded = {s: np.concatenate([r.bars[s] for r in runs]) for s in symbols}
    return BacktestResult(runs[0].strategy, dict(runs[-1].params), symbols, period, stats,
                          trades, curve,
                          Fills(_Windows([_records(r.fills) for r in runs]), "backtest"), traded,
                          [x for r in runs for x in r.rejected])
