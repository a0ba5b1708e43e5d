"""Backtests: replay history through the live strategy API and the same clearing core.

History is read through the ShmArray interface a live feed keeps, in place (`_held`: the bars
are held once); a replay clock moves bar by bar;
the strategy's callbacks and its Context are the live ones, and orders go to a PaperBroker whose
account is matched by the same numba kernel as paper trading. Conventions:

- `on_bar` sees closed bars only; the clock reads the bar's close time while it runs.
- A market order placed in `on_bar` fills at the next bar's open, plus slippage (a fraction of
  the price) and commission (a fraction of notional).
- Inside a bar the price path is open, the nearer of high/low, the other, close. Limit and stop
  orders fill where the path reaches them: at the order price, or at the open if the bar gaps
  through it.
- Equity is marked at each bar's close. Several symbols replay merged in time order; at a
  time they share, every symbol's open is met before any bar's path, the symbols in the order
  their oldest working orders were placed (a rebalance's sells fill before its buys).
- Quote-driven strategies get four quotes per bar synthesized from that path (bid = ask =
  last = the point's price), or recorded ticks replayed through the live feed (`replay_ticks`).
- Same inputs, same results, byte for byte (`to_json`).
"""

from __future__ import annotations

import gc
import inspect
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import trio

from engine.backtests._closeout import close_positions
from engine.backtests._equity import Curve
from engine.backtests._held import HeldBars, numbered
from engine.backtests.metrics import compute_stats, drawdowns, sharpe_ci
from engine.backtests.records import (
    FillLog,
    OrderLog,
    equity_columns,
    fill_columns,
    frame,
    order_columns,
    rows,
    trade_columns,
)
from engine.backtests.trades import build_trades, trade_table
from engine.clearing.broker import PaperBroker
from engine.clearing.config import BrokerConfig
from engine.clock import ReplayClock, use_clock
from engine.dtypes import ohlc_dtype
from engine.live import resolve_strategy
from engine.orders import OrderCancelled, OrderFilled
from engine.run_spec import RunSpec, RunSpecError
from engine.sampler import format_timeframe, parse_timeframe, resample_bars
from engine.scheduler import EVENT_CALLBACKS, callback_for, make_runner, overrides
from engine.shm import ShmArray
from engine.strategy import Context, Strategy, StrategyError, stamped_line, strategy_traceback
from engine.timeframes import fold_history
from engine.warmup import strategy_warmup

__all__ = ["BacktestResult", "BacktestError", "run_backtest", "load_data", "evaluate_params",
           "SWEEP_METRICS"]

# The statistics a sweep keeps for each combination (and may rank by).
SWEEP_METRICS = ("sharpe", "return_pct", "final_equity", "cagr_pct", "sortino", "calmar",
                 "max_drawdown_pct", "num_trades", "win_rate_pct", "profit_factor",
                 "exposure_pct", "fees", "periods", "periods_per_year", "skew", "kurtosis")


# Whether a replay may take its plain market orders the short way (`PaperBroker.submit_market`:
# on the book without their SubmitOrder built): the same results either way; off to compare.
QUICK_ORDERS = True

# Where a bare symbol (`--data GOOG`) is looked up when it is neither a file nor stored.
FILE_PROVIDER = "providers.csvfile"


class BacktestError(RuntimeError):
    """The backtest could not run: bad data, a bad option, or the strategy raised."""


class Fills(Sequence):
    """A run's fills as `OrderFilled` events, built from its columnar fill log when read (one
    when indexed, all of them, kept, when iterated)."""

    def __init__(self, items: FillLog, account: str) -> None:
        self._items = items
        self._account = account
        self._events: list[OrderFilled] | None = None

    def _all(self) -> list[OrderFilled]:
        if self._events is None:
            self._events = [f.event(self._account) for f in self._items]
        return self._events

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: Any) -> Any:
        if self._events is None and not isinstance(i, slice):
            n = len(self._items)
            k = int(i) + n if int(i) < 0 else int(i)
            if not 0 <= k < n:
                raise IndexError(f"fill {i} of {n}")
            return self._items.record(k).event(self._account)
        return self._all()[i]

    def __iter__(self) -> Iterator[OrderFilled]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return f"Fills({len(self)} fills)"


@dataclass
class BacktestResult:
    """What a backtest produced: statistics, trades, the equity curve, fills, orders and the
    bars. `trades_df()`, `fills_df()`, `orders_df()` and `equity_df()` give each as a pandas
    DataFrame with the columns of the JSON, indexed by UTC time."""

    strategy: str
    params: dict
    symbols: list[str]
    timeframe: int
    stats: dict
    trades: list[dict]
    equity: np.ndarray  # fields time (the bar's open, epoch s), equity at its close, drawdown_pct
    fills: Sequence[OrderFilled]
    bars: dict[str, np.ndarray] = field(repr=False)
    rejected: list = field(default_factory=list, repr=False)
    log: list[str] = field(default_factory=list, repr=False)  # the strategy's log lines
    orders: OrderLog = field(default_factory=OrderLog, repr=False)
    lots: str = "fifo"
    close_at_end: bool = False

    def to_dict(self) -> dict:
        """Everything JSON can hold; keys sorted, the same for the same inputs."""
        period = self.timeframe
        return {
            "strategy": self.strategy, "params": self.params, "symbols": self.symbols,
            "timeframe": format_timeframe(self.timeframe), "lots": self.lots,
            "close_at_end": self.close_at_end,
            **{k: _clean(v) for k, v in self.stats.items()},
            "trades": _clean_rows(rows(trade_columns(self.trades, period))),
            "equity": _clean_rows(rows(equity_columns(self.equity, period))),
            "fills": _clean_rows(rows(fill_columns(_records(self.fills), period))),
            "orders": _clean_rows(rows(order_columns(self.orders, _records(self.fills),
                                                     period))),
            "log": self.log,
            "rejected": [r.model_dump(exclude={"account"}) for r in self.rejected],
        }

    def trades_df(self) -> Any:
        """The trades as a DataFrame indexed by entry time (UTC); open ones last."""
        return frame(trade_columns(self.trades, self.timeframe), "entry_time")

    def fills_df(self) -> Any:
        """The fills as a DataFrame indexed by fill time (UTC)."""
        return frame(fill_columns(_records(self.fills), self.timeframe), "time")

    def orders_df(self) -> Any:
        """The submitted orders and what became of them (status filled, cancelled, rejected or
        still working), indexed by the time they were placed (UTC)."""
        return frame(order_columns(self.orders, _records(self.fills), self.timeframe), "time")

    def equity_df(self) -> Any:
        """The equity curve (equity, drawdown_pct) as a DataFrame indexed by time (UTC)."""
        return frame(equity_columns(self.equity, self.timeframe), "time")

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        if path is not None:
            Path(path).write_text(text)
        return text

    def plot(self, path: str | Path = "backtest.html") -> Path:
        """Write a self-contained HTML report (price and trades, equity, drawdown)."""
        from engine.backtests.report import write_report

        return write_report(self, Path(path))

    def table(self) -> str:
        """The statistics as an aligned text table (times as ISO 8601 UTC)."""
        rows = []
        for k, v in self.stats.items():
            if k in ("start_time", "end_time"):
                continue  # shown as start and end
            if isinstance(v, float):
                v = f"{v:,.4f}" if abs(v) < 100 else f"{v:,.2f}"
            rows.append(f"  {k.replace('_', ' '):28s} {v}")
        return "\n".join(rows)

    def __str__(self) -> str:
        head = f"{self.strategy} on {', '.join(self.symbols)}"
        if self.stats.get("costs") == "none":
            head += "  (no commission, no slippage: trading costs nothing here)"
        return f"{head}\n{self.table()}"


def _get_equity(self: BacktestResult) -> np.ndarray:
    curve = self.__dict__["_equity"]
    if isinstance(curve, Curve):
        curve = self.__dict__["_equity"] = curve.build()
    return curve


def _set_equity(self: BacktestResult, curve: Any) -> None:
    self.__dict__["_equity"] = curve


def _get_log(self: BacktestResult) -> list[str]:
    lines = self.__dict__["_log"]
    if not self.__dict__.get("_log_built"):
        # Lines `Strategy.log` kept as (time, message) get their time stamp now.
        lines[:] = [x if type(x) is str else stamped_line(x) for x in lines]
        self.__dict__["_log_built"] = True
    return lines


def _set_log(self: BacktestResult, lines: list) -> None:
    self.__dict__["_log"] = lines
    self.__dict__["_log_built"] = False


BacktestResult.log = property(_get_log, _set_log,  # type: ignore[assignment]
                              doc="the strategy's log lines at or above the run's log level")

# `equity` is built from the run's one float per bar when first read (see `Curve`).
BacktestResult.equity = property(_get_equity, _set_equity,  # type: ignore[assignment]
                                 doc="fields time (the bar's open, epoch s), equity at its "
                                     "close, drawdown_pct")


def _records(fills: Sequence) -> Sequence:
    """The fills as they were logged (records or events: the same attributes), without
    building an event for each."""
    return fills._items if isinstance(fills, Fills) else fills


def _clean_rows(rows: list[dict]) -> list[dict]:
    return [{k: _clean(v) for k, v in r.items()} for r in rows]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


# -- data ----------------------------------------------------------------------------------------


def _as_bars(obj: Any, name: str) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        if obj.dtype == ohlc_dtype:
            return obj  # already bars; never written to (replayed in place, or copied once)
        if obj.dtype.names is None or not {"time", "open", "high", "low", "close"} <= set(
                obj.dtype.names):
            raise BacktestError(f"{name}: bars need time, open, high, low, close fields")
        bars = np.zeros(len(obj), dtype=ohlc_dtype)
        for f in ohlc_dtype.names:
            if f in obj.dtype.names:
                bars[f] = obj[f]
        if "bar_wap" not in obj.dtype.names:
            bars["bar_wap"] = (bars["open"] + bars["high"] + bars["low"] + bars["close"]) / 4
        return bars
    if hasattr(obj, "to_records"):  # a pandas DataFrame indexed by time
        import pandas as pd

        df = obj.rename(columns=str.lower)
        idx = pd.DatetimeIndex(df.index)
        if idx.tz is not None:
            idx = idx.tz_convert("UTC").tz_localize(None)
        bars = np.zeros(len(df), dtype=ohlc_dtype)
        bars["time"] = idx.asi8 // 10**9
        for f in ("open", "high", "low", "close", "volume"):
            if f in df:
                bars[f] = df[f].to_numpy(dtype=float)
        bars["bar_wap"] = (bars["open"] + bars["high"] + bars["low"] + bars["close"]) / 4
        return bars
    raise BacktestError(f"{name}: cannot read bars from a {type(obj).__name__}")


def _read_source(spec: str, provider: str | None, timeframe: int | None) -> tuple[str, np.ndarray]:
    """Bars for a symbol or file: a CSV/Parquet path, the history store, or csvfile's data dir."""
    from engine.datafiles import MalformedFileError, load

    path = Path(spec)
    if path.suffix.lower() in (".csv", ".gz", ".parquet", ".pq") or path.is_file():
        if not path.is_file():
            raise BacktestError(f"data file {spec!r} does not exist")
        try:
            return path.name.split(".")[0], load(path).bars
        except (MalformedFileError, OSError, ValueError) as exc:
            raise BacktestError(str(exc)) from None
    try:
        from engine import store
    except ImportError:
        store = None
    if store is not None:
        for info in store.list_datasets():
            if info.symbol.lower() == spec.lower() and (provider is None
                                                        or info.provider == provider):
                if timeframe is None or timeframe % info.timeframe == 0:
                    try:
                        return spec, store.load_bars(info.provider, info.symbol, info.timeframe)
                    except Exception as exc:
                        raise BacktestError(f"{info.path}: {exc}") from None
    from engine.provider import ProviderError, load_provider

    try:
        # A bare name is a file of the file provider's data directory (its symbol_info says
        # which), found by module path like any provider.
        files = load_provider(FILE_PROVIDER, check=False).module
        return spec, load(files.symbol_info(spec)["path"]).bars
    except FileNotFoundError as exc:
        raise BacktestError(f"no data for {spec!r}: not a file, not in the history store "
                            f"(engine data list), and {exc}") from None
    except (MalformedFileError, OSError, ValueError, ProviderError) as exc:
        raise BacktestError(str(exc)) from None


def _period(times: np.ndarray) -> int:
    d = np.diff(times)
    d = d[d > 0]
    return int(np.median(d)) if len(d) else 86400


def _to_epoch(t: Any) -> int | None:
    if t is None:
        return None
    if isinstance(t, int | float):
        return int(t)
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(str(t))
    except ValueError:
        raise BacktestError(f"bad time {t!r}: use ISO 8601 (2024-01-31 or 2024-01-31T09:30)"
                            " or epoch seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def load_data(data: Any, *, symbols: Sequence[str] | None = None, provider: str | None = None,
              timeframe: int | str | None = None, start: Any = None, end: Any = None
              ) -> tuple[dict[str, np.ndarray], int]:
    """Bars per symbol and their period (s) from paths, symbols, arrays or DataFrames."""
    tf = parse_timeframe(timeframe) if timeframe else None
    if isinstance(data, Mapping):
        items = [(str(k), _as_bars(v, str(k))) for k, v in data.items()]
    elif isinstance(data, str | Path):
        items = [_read_source(s.strip(), provider, tf) for s in str(data).split(",") if s.strip()]
    elif isinstance(data, Sequence) and data and isinstance(data[0], str | Path):
        items = [_read_source(str(s), provider, tf) for s in data]
    else:
        name = symbols[0] if symbols else "data"
        items = [(name, _as_bars(data, name))]
    if symbols:
        if len(symbols) != len(items):
            raise BacktestError(f"{len(symbols)} symbols for {len(items)} data sources")
        items = [(s, b) for s, (_, b) in zip(symbols, items, strict=True)]
    lo, hi = _to_epoch(start), _to_epoch(end)
    out: dict[str, np.ndarray] = {}
    periods = []
    for name, bars in items:
        if lo is not None:
            bars = bars[bars["time"] >= lo]
        if hi is not None:
            bars = bars[bars["time"] <= hi]
        if len(bars) == 0:
            raise BacktestError(f"{name}: no bars in the chosen range")
        p = _period(bars["time"])
        if tf and tf != p:
            if tf % p:
                raise BacktestError(f"{name}: {format_timeframe(p)} bars cannot make "
                                    f"{format_timeframe(tf)} bars")
            bars = resample_bars(bars, tf)
            p = tf
        out[name] = bars
        periods.append(p)
    return out, (tf or min(periods))


# -- the replay ----------------------------------------------------------------------------------


def _steps(bars: dict[str, np.ndarray], skip: dict[str, int], period: int
           ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The replay's steps, one per traded bar, merged in time order (ties in symbol order):
    each step's symbol index, and its bar's time, open, high, low, close and span. A bar's span
    ends at its period or at the symbol's next bar, whichever is first (months and sessions are
    irregular): orders placed at its close meet the next open."""
    symbols = list(bars)
    if len(symbols) == 1:
        # Views of the bars and spans computed when read: nothing the length of the bars.
        b = bars[symbols[0]][skip[symbols[0]]:]
        steps = {f: b[f] for f in ("time", "open", "high", "low", "close")}
        steps["span"] = _Spans(b["time"], period)
        return np.broadcast_to(np.int64(0), (len(b),)), steps
    # Several symbols: each step's symbol, its row in that symbol's bars, time and span (the
    # bars' other fields are read through those when a step needs them: no merged copies).
    times, spans, rows = [], [], []
    for s in symbols:
        b = bars[s]
        t = b["time"]
        span = np.full(len(t), period, dtype=np.int64)
        if len(t) > 1:
            np.minimum(period, t[1:] - t[:-1], out=span[:-1])
        times.append(t[skip[s]:])
        spans.append(span[skip[s]:])
        rows.append(np.arange(skip[s], len(t), dtype=np.int64))
    if all(len(t) == len(times[0]) and np.array_equal(t, times[0]) for t in times[1:]):
        # Every symbol on the same times (a universe of one calendar): the merge is time-major
        # with the symbols in order, what the sort below gives, without sorting.
        # Same times, so the same spans and rows for every symbol.
        m = len(symbols)
        which = np.tile(np.arange(m, dtype=np.int64), len(times[0]))
        steps = {"time": np.repeat(times[0], m), "span": np.repeat(spans[0], m)}
        row = np.repeat(rows[0], m)
        for f in ("open", "high", "low", "close"):
            steps[f] = _Gather([bars[s][f] for s in symbols], which, row)
        return which, steps
    which = np.concatenate([np.full(len(bars[s]) - skip[s], j, dtype=np.int64)
                            for j, s in enumerate(symbols)])
    time = np.concatenate(times)
    order = np.lexsort((which, time))
    del times
    which, time = which[order], time[order]
    span = np.concatenate(spans)[order]
    del spans
    row = np.concatenate(rows)[order]
    del rows, order
    steps = {"time": time, "span": span}
    for f in ("open", "high", "low", "close"):
        steps[f] = _Gather([bars[s][f] for s in symbols], which, row)
    return which, steps


class _Gather:
    """A field of several symbols' bars in step order, read through each step's symbol and
    row: one value when a step needs it, the whole column only when asked (`array`)."""

    def __init__(self, columns: list[np.ndarray], which: np.ndarray, row: np.ndarray) -> None:
        self.columns = columns
        self.which = which
        self.row = row

    def item(self, k: int) -> float:
        return self.columns[self.which.item(k)].item(self.row.item(k))

    def array(self) -> np.ndarray:
        """The whole column in step order."""
        offsets = np.r_[0, np.cumsum([len(c) for c in self.columns])].astype(np.int64)
        return np.concatenate(self.columns)[offsets[self.which] + self.row]


class _Spans:
    """The spans of one symbol's bars (`_steps`), each computed when read."""

    def __init__(self, times: np.ndarray, period: int) -> None:
        self.times = times
        self.period = period

    def __len__(self) -> int:
        return len(self.times)

    def item(self, k: int) -> int:
        t = self.times
        return min(self.period, int(t[k + 1] - t[k])) if k + 1 < len(t) else self.period

    def __getitem__(self, part: slice) -> np.ndarray:
        lo, hi, _ = part.indices(len(self.times))
        hi = max(lo, hi)
        span = np.full(hi - lo, self.period, dtype=np.int64)
        ext = self.times[lo:hi + 1]
        m = min(len(ext) - 1, hi - lo)
        if m > 0:
            np.minimum(self.period, ext[1:m + 1] - ext[:m], out=span[:m])
        return span


async def _replay(strat: Strategy, run: _Run, progress: Callable[[int, int], None] | None
                  ) -> tuple[FillLog, np.ndarray, dict[str, Any], list]:
    """The middle stages: start the strategy, warm it up (bars before it is warm are history
    it is not called for), step through every bar (orders meet each bar's path, then the
    strategy hears the close) and stop it."""
    bars, shms, period, broker, clock, skip = (run.bars, run.shms, run.period, run.broker,
                                               run.clock, run.skip)
    symbols = list(bars)
    try:
        runner = make_runner(strat, symbols=symbols, timeframe=period, bars=shms, quotes={},
                             clock=clock, router=broker)
    except StrategyError as exc:
        raise BacktestError(str(exc)) from None
    ctx = runner.context
    ctx.set_id_prefix("o")
    for s in symbols:
        # Nothing is visible before its bar closes; warm-up bars are history from the start.
        ctx._seen[s][0] = skip[s]
    # Several timeframes or on_bars: bar calls go through the dispatch live runs use.
    dispatch = runner._dispatch
    fold_history(ctx, symbols)
    general = not dispatch.simple
    grouped = dispatch.grouped
    pending: list = []
    broker.attach(None, pending.extend)
    fills = FillLog(symbols, run.fills_in_memory)
    cancels: list[OrderCancelled] = []
    account = broker.account
    sym_index = [account.add_symbol(s) for s in symbols]
    marks = account.marks  # add_symbol may have grown it
    seen = [ctx._seen[s] for s in symbols]
    cls = type(strat)
    wants_bar = overrides(cls, "on_bar")
    wants_quote = overrides(cls, "on_quote")
    on_bar, on_quote = strat.on_bar, strat.on_quote
    # Only callbacks the strategy defines are called: the base class's do nothing.
    handlers = {name: getattr(strat, name) for name in set(EVENT_CALLBACKS.values())
                if overrides(cls, name)}
    if not wants_quote:
        # Only orders read the marks (risk checks): they are brought up to date for each one
        # instead of at every bar. A quote-driven strategy's marks follow its quotes instead.
        last_close = [bars[s]["close"] for s in symbols]

        def refresh_marks() -> None:
            for j in range(len(symbols)):
                n = seen[j][0]
                if n:
                    marks[sym_index[j]] = last_close[j][n - 1]

        gathered: list[np.ndarray] = []

        def refresh_many() -> None:
            # A universe: the latest closes gathered in one indexing, not a loop per symbol
            # (the closes joined once, when the first order is checked).
            if not gathered:
                lengths = np.array([len(c) for c in last_close], dtype=np.int64)
                gathered.extend((np.concatenate(last_close), np.r_[0, np.cumsum(lengths)[:-1]],
                                 np.asarray(sym_index, dtype=np.int64)))
            closes, offsets, rows = gathered
            n = np.fromiter((c[0] for c in seen), dtype=np.int64, count=len(seen))
            has = n > 0
            marks[rows[has]] = closes[offsets[has] + n[has] - 1]

        if len(symbols) == 1:
            one_seen, one_close, one_row = seen[0], last_close[0], sym_index[0]

            def refresh_one() -> None:
                n = one_seen[0]
                if n:
                    marks[one_row] = one_close[n - 1]

            broker.refresh_marks = refresh_one
        else:
            broker.refresh_marks = refresh_marks if len(symbols) <= 16 else refresh_many
    revalue = not wants_quote and len(symbols) > 1 and broker.config.risk.leverage is not None
    # Fills nobody is told of are logged as rows (their symbols indexed as the run's), their
    # events built only if asked for.
    logged = "on_fill" not in handlers and broker.ledger is None \
        and account.symbols[:len(symbols)] == fills.symbols
    if logged:
        account.log_fills()
    # Plain market orders of a bar-driven strategy nobody hears events of (fills logged as
    # rows, no ledger, no on_order) take the broker's short way to the book.
    quick = QUICK_ORDERS and logged and not wants_quote and broker.quick_orders()
    if quick and type(ctx) is Context:
        ctx._quick_submit = broker.submit_market
        ctx._quick_held = broker.held

    def keep_fills() -> None:
        """Move the fill rows logged so far into the run's columns."""
        if logged and account.n_fill_rows:
            fills.add_block(*account.take_fill_rows())
    where = "on_start"

    def take(k: int) -> list:
        """Record the pending fills; return the (handler, event) calls the pending events make,
        in order (only for callbacks the strategy defines)."""
        events = pending[:]
        pending.clear()
        calls = []
        for e in events:
            if type(e) is OrderFilled:
                fills.add(k, (e,))
            elif type(e) is OrderCancelled:
                cancels.append(e)
            handler = handlers.get(callback_for(e))
            if handler is not None:
                calls.append((handler, e))
        return calls

    async def call(calls: list) -> None:
        nonlocal where
        for handler, e in calls:
            where = handler.__name__
            r = handler(e)
            if r is not None and inspect.isawaitable(r):
                await r

    async def bar_calls(calls: list) -> None:
        nonlocal where
        for fn, args in calls:
            where = fn.__name__
            r = fn(*args)
            if r is not None and inspect.isawaitable(r):
                await r
            if pending:
                await call(take(k_now))

    which, steps = _steps(bars, skip, period)
    total = len(which)
    st_t, st_o, st_h, st_l, st_c, st_span = (steps[f] for f in ("time", "open", "high", "low",
                                                                  "close", "span"))

    def path(k: int) -> tuple:
        """The path through bar k: open, the nearer extreme, the farther one, close."""
        t, span = st_t.item(k), st_span.item(k)
        o, h, lo, c = st_o.item(k), st_h.item(k), st_l.item(k), st_c.item(k)
        near, far = (h, lo) if h - o <= o - lo else (lo, h)
        return ((t, o, False), (t + span * 0.25, near, True), (t + span * 0.5, far, True),
                (t + span * 0.999, c, True))

    def meet(k: int, j: int, pt: float, px: float, touch: bool) -> None:
        """Working orders meet one point of bar k's path (of symbol `j`); logged fills are
        tagged with k."""
        clock._now = pt
        events = account.match_point(sym_index[j], pt, px, touch, k)
        if events:
            broker._record(events)

    def through(k: int, j: int, opened: bool = False) -> list | None:
        """Working orders meet the path through bar k until none is left working (`opened`:
        its open was met already, with the other symbols' at that time)."""
        if revalue:
            refresh_marks()  # a fill's buying-power check values the other symbols at their marks
        # The open first: a market order is done there, and the rest of the path is not needed.
        if not opened:
            meet(k, j, st_t.item(k), st_o.item(k), False)
        if account.unsettled:
            for pt, px, touch in path(k)[1:]:
                meet(k, j, pt, px, touch)
                if not account.unsettled:
                    break
        return take(k) if pending else None

    async def through_quotes(k: int, j: int) -> None:
        """As `through`, with a quote to a quote-driven strategy at each point."""
        nonlocal where
        sym = symbols[j]
        for pt, px, touch in path(k):
            clock._now = pt
            marks[sym_index[j]] = px
            if account.unsettled:
                meet(k, j, pt, px, touch)
            if pending:
                await call(take(k))
            if seen[j][0] < warm:
                continue  # not warm yet: the quote moves the book, the strategy waits
            where = "on_quote"
            r = on_quote({"symbol": sym, "last": px, "time": pt, "bid": px, "ask": px,
                          "ticks": [{"type": "trade", "price": px, "size": 0.0, "time": pt}]})
            if r is not None:
                await r
        where = "on_bar"

    # Steps k..group_end[k] share a time: at it every symbol's open comes before the path
    # inside any bar (all of which is later than the opens).
    group_end = None
    if len(symbols) > 1 and total:
        last_of = np.flatnonzero(np.r_[st_t[1:] != st_t[:-1], True])
        group_end = np.repeat(last_of, np.diff(np.r_[-1, last_of]))
    opened_to = -1  # the last step whose open was met with its time's others

    def opens(k: int) -> list:
        """Working orders meet the opens of every symbol with a bar at step k's time, the
        symbols taken in the order their oldest working orders were placed: a rebalance's
        sells, placed first, fill before its buys and free the cash those need, as on a venue
        (and in backtrader's broker). Returns the calls the fills make, in order."""
        end = int(group_end[k])
        live = account.orders[account._start:account.n_orders]
        working = (live["status"] >= 0) & (live["status"] <= 1)  # pending or working, not dormant
        first = {}
        for q in range(k, end + 1):
            rows = np.flatnonzero(working & (live["sym"] == sym_index[which.item(q)]))
            if len(rows):
                first[q] = rows[0]
        if revalue:
            refresh_marks()
        calls: list = []
        for q in sorted(first, key=first.__getitem__):
            # Tagged with step k, the first of their time: the fills' steps stay in order.
            meet(k, which.item(q), st_t.item(q), st_o.item(q), False)
            if pending:
                calls += take(k)
        return calls

    warm = 0  # set once the strategy has started and declared its indicators
    # The per-bar path reads Python numbers (fast); the path through a bar, taken only while
    # orders work or for quote-driven strategies, reads the arrays.
    every = 65536
    gc.freeze()  # run_backtest unfreezes when the results are built
    try:
        r = strat.on_start()
        if inspect.isawaitable(r):
            await r
        # Warm-up: not called before its signals stop depending on the history before them.
        warm = dispatch.warm = strategy_warmup(strat)
        where = "on_bar"
        k_now = 0
        # One symbol's bars to on_bar, nothing else per bar: a loop that only moves its index.
        simple = (len(symbols) == 1 and wants_bar and not wants_quote and not general
                  and not grouped)
        # on_bars over one timeframe, bar-driven: a step's bars are counted, then one call.
        stepwise = grouped and not dispatch.higher and not wants_quote
        if stepwise:
            where = "on_bars"
            starts = np.flatnonzero(np.r_[True, st_t[1:] != st_t[:-1]]) if total else \
                np.zeros(0, dtype=np.int64)
            stops = np.r_[starts[1:], total].astype(np.int64)
            fn, with_tf, label = dispatch.fn, dispatch.with_tf, dispatch.finest_label
            report = 0
            n_symbols, all_warm = len(symbols), False
            for g0, g1 in zip(starts.tolist(), stops.tolist(), strict=True):
                if g0 >= report:
                    if progress is not None:
                        progress(g0, total)
                    keep_fills()
                    gc.freeze()
                    report = g0 + every
                js = which[g0:g1].tolist()
                if account.unsettled:
                    # Orders work: each bar as the general loop takes it (opens, path, close).
                    for k, j in zip(range(g0, g1), js, strict=True):
                        if group_end is not None and k > opened_to and group_end.item(k) > k:
                            opened_to = group_end.item(k)
                            calls = opens(k)
                            if calls:
                                await call(calls)
                                where = "on_bars"
                        calls = through(k, j, k <= opened_to)
                        if calls:
                            await call(calls)
                            where = "on_bars"
                        clock._now = st_t.item(k) + st_span.item(k)
                        seen[j][0] += 1
                else:
                    # Nothing can happen between a step's bars: count them all, then call.
                    for j in js:
                        seen[j][0] += 1
                    k = g1 - 1
                    clock._now = st_t.item(k) + st_span.item(k)
                if len(js) == n_symbols and all_warm:
                    names = symbols[:]  # every symbol, in order: one bar each
                else:
                    names = [symbols[j] for j in js if seen[j][0] >= warm]
                    if len(set(js)) != len(js):
                        names = sorted(set(names), key=symbols.index)
                    all_warm = len(js) == n_symbols and len(names) == n_symbols
                if names:
                    r = fn(names, label) if with_tf else fn(names)
                    if r is not None and inspect.isawaitable(r):
                        await r
                if pending:
                    await call(take(g1 - 1))
                    where = "on_bars"
        for first in range(0, total if not stepwise else 0, every):
            if simple:
                if progress is not None:
                    progress(first, total)
                keep_fills()
                gc.freeze()
                stop = min(total, first + every)
                cell, sym = seen[0], symbols[0]
                # Bars before the strategy is warm only count; after them, every bar calls it.
                cold = max(first, min(stop, first + warm - 1 - cell[0]))
                ends = (st_t[first:cold] + st_span[first:cold]).tolist()
                for k, end in zip(range(first, cold), ends, strict=True):
                    if account.unsettled:
                        calls = through(k, 0)
                        if calls:
                            await call(calls)
                            where = "on_bar"
                    clock._now = end
                    cell[0] += 1
                if cold == stop:
                    continue
                # The step and the time are read off the bar count where they are needed
                # (the clock follows it), not carried per bar.
                n = cell[0]
                base = n - cold
                clock.follow(st_t[cold:stop] + st_span[cold:stop], cell, base + 1 + cold)
                for _ in repeat(None, stop - cold):
                    if account.unsettled:
                        calls = through(n - base, 0)
                        if calls:
                            await call(calls)
                            where = "on_bar"
                        clock._now = None  # the path's time until now; the close from here
                    n += 1
                    cell[0] = n
                    r = on_bar(sym)
                    if r is not None:
                        await r
                        clock._now = None  # (an async on_bar may have moved the clock)
                    if pending:
                        await call(take(n - 1 - base))
                        where = "on_bar"
                        clock._now = None
                clock.settle()
                continue
            if progress is not None:
                progress(first, total)
            # What survived the last chunk (orders, fills) lives to the end of the run: out
            # of the collector's full passes with the rest (young garbage is still collected).
            keep_fills()
            gc.freeze()
            stop = min(total, first + every)
            # A chunk at a time: the Python numbers of one chunk reuse the last one's memory.
            ends = (st_t[first:stop] + st_span[first:stop]).tolist()
            for k, j, end in zip(range(first, stop), which[first:stop].tolist(), ends,
                                 strict=True):
                if grouped and dispatch.step_time is not None \
                        and st_t.item(k) != dispatch.step_time:
                    await bar_calls(dispatch.flush())  # the step before is complete
                k_now = k
                if wants_quote:
                    await through_quotes(k, j)
                elif account.unsettled:
                    if group_end is not None and k > opened_to and group_end.item(k) > k:
                        opened_to = group_end.item(k)
                        calls = opens(k)
                        if calls:
                            await call(calls)
                            where = "on_bar"
                    calls = through(k, j, k <= opened_to)
                    if calls:
                        await call(calls)
                        where = "on_bar"
                clock._now = end
                if wants_quote:
                    marks[sym_index[j]] = st_c.item(k)
                seen[j][0] += 1
                if general:
                    calls = dispatch.closed(symbols[j], st_t.item(k))
                    if calls:
                        await bar_calls(calls)
                elif wants_bar and seen[j][0] >= warm:
                    r = on_bar(symbols[j])
                    if r is not None:
                        await r
                if pending:
                    await call(take(k))
                    where = "on_bar"
        if grouped:
            await bar_calls(dispatch.flush())
        where = "on_stop"
        r = strat.on_stop()
        if inspect.isawaitable(r):
            await r
        if pending:
            await call(take(total - 1))
        keep_fills()
    except (KeyboardInterrupt, trio.Cancelled):
        raise
    except Exception as exc:
        path = getattr(cls, "__source_path__", None)
        raise BacktestError(f"{strat.name}.{where} raised:\n{strategy_traceback(exc, path)}"
                            ) from exc
    if progress is not None:
        progress(total, total)
    return fills, which, steps, cancels


def _equity(bars: dict[str, np.ndarray], step_sym: np.ndarray, steps: dict[str, Any],
            fills: FillLog, cash: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equity at the close of every time's last step, the time it is stamped with (the bar's
    open: the period it covers), and whether any position was open then."""
    from engine.backtests._equity import equity_curve, equity_one

    symbols = list(bars)
    f = fills.rows
    # The log's symbols start with the run's, in order: its indices are the curve's.
    f_qty = f["size"] * f["side"]
    f_step, f_px, f_fee = f["step"].copy(), f["price"].copy(), f["fee"].copy()
    times = steps["time"]
    if len(symbols) == 1:
        equity, exposed = equity_one(bars[symbols[0]]["close"], f_step, f_qty, f_px, f_fee,
                                     float(cash))
        return times, equity, exposed
    which = np.asarray(step_sym, dtype=np.int64)
    closes = steps["close"].array()
    # One point per time: with several symbols, the last step of a time holds every close.
    last = np.r_[times[1:] != times[:-1], True]
    equity, exposed = equity_curve(which, closes, len(symbols), f_step,
                                   f["sym"].astype(np.int64), f_qty, f_px, f_fee, float(cash),
                                   last)
    return times[last], equity, exposed


def run_backtest(strategy: str | Path | type[Strategy] | Strategy, data: Any = None, *,
                 spec: RunSpec | None = None, params: dict[str, Any] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 **options: Any) -> BacktestResult:
    """Replay `data` through `strategy` and return its statistics, trades and equity curve.

    The run is described by `spec` (an `engine.RunSpec`), or built from `data` and `options`,
    the RunSpec's fields by name: the data (`symbols`, `provider`, `timeframe`, `start`/`end`
    as ISO 8601 or epoch s, `trade_from`: bars before it are warm history the strategy sees but
    is not called for, `ticks`: replay recorded ticks), the costs (`commission` and `slippage`
    as fractions, or `fees`: a venue preset such as "binance"), the account (`cash`,
    `leverage`: a cap on gross exposure as a multiple of equity, `allow_short`,
    `shrink_to_fit`, `instruments`: lot size, tick size and minimum notional by symbol, as
    `{"GOOG": {"lot_size": 1, "tick_size": 0.01}}`) and the measures (`periods_per_year`, `risk_free`, `bootstrap`,
    `close_at_end`: close open positions at each symbol's last close as counted trades,
    `lots`: "fifo" or "average", `log_level`: the strategy's log lines kept in `result.log`,
    `fills_in_memory`: the most fills held in memory, older ones spilled to disk; None: all).
    `data`: a CSV/Parquet path or a symbol (several, comma-separated), the history store's
    symbol, a bars array or a pandas DataFrame, or a dict of those by symbol. `progress(done,
    total)` hears how far the replay is. See the module docstring for conventions.
    """
    spec = _spec(spec, data, options)
    try:
        strat = resolve_strategy(strategy, params)
    except StrategyError as exc:
        raise BacktestError(str(exc)) from None
    if spec.data.ticks:
        if spec.data.trade_from is not None:
            raise BacktestError("trade_from applies to bar replays, not to tick replays")
        with _captured_log(strat, spec.measure.log_level) as lines:
            result = _run_ticks(strat, spec)
        result.log = lines
        return result
    run = _load(strat, spec)
    # Everything alive now (the interpreter's modules, numba's and pydantic's machinery, the
    # bars) lives through the run, and the replay's step lists hold millions of items: none of
    # it can become cyclic garbage meanwhile, so the collector stops walking it on each full
    # collection until the results are built.
    gc.freeze()
    try:
        with _rarer_collections():
            # The replay's results come back beside trio's run, not as its return value:
            # trio's runner is cyclic garbage once it ends, and what it holds waits for the
            # collector's next full pass.
            out: list = []

            async def main() -> None:
                use_clock(run.clock)
                out.append(await _replay(strat, run, progress))

            try:
                with _captured_log(strat, spec.measure.log_level) as lines:
                    trio.run(main)
                fills, step_sym, steps, cancels = out.pop()
            finally:
                for s, shm in run.shms.items():
                    if s not in run.reuse:
                        shm.close()
                        shm.unlink()
            gc.freeze()  # the run's orders and fills too, while its results are built
            return _collect(strat, spec, run, fills, step_sym, steps, cancels, lines)
    finally:
        gc.unfreeze()


_gc_lock = threading.Lock()
_gc_runs = 0
_gc_before = gc.get_threshold()
# Young collections a run allows: the replay's per-order tuples and the strategy's log
# arguments are freed by reference counting, and a collection every 700 of them walks the
# young objects to find no cycle (3% of a 1M-bar run). A cycle a strategy makes waits a
# little longer to be freed.
_RUN_GC_THRESHOLD = 50_000


@contextmanager
def _rarer_collections() -> Iterator[None]:
    """Young collections rarer while a run (or several, in threads) is replaying."""
    global _gc_runs, _gc_before
    with _gc_lock:
        _gc_runs += 1
        if _gc_runs == 1:
            _gc_before = gc.get_threshold()
            gc.set_threshold(max(_gc_before[0], _RUN_GC_THRESHOLD), *_gc_before[1:])
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0:
                gc.set_threshold(*_gc_before)


def _spec(spec: RunSpec | None, data: Any, options: dict[str, Any]) -> RunSpec:
    """The run's description: `spec` as given (with `data` and `options` applied), or built."""
    try:
        if spec is None:
            return RunSpec.build(data=data, **options)
        if data is not None or options:
            return spec.replace(**({"data": data} if data is not None else {}), **options)
        return spec
    except RunSpecError as exc:
        raise BacktestError(str(exc)) from None


@dataclass
class _Run:
    """A bar replay's state between its stages: the bars, their shared memory, the clock and
    the broker, and how many warm-history bars each symbol starts with."""

    bars: dict[str, np.ndarray]
    period: int
    skip: dict[str, int]
    shms: dict[str, ShmArray]
    reuse: dict[str, ShmArray]
    clock: ReplayClock
    broker: PaperBroker
    config: BrokerConfig
    fills_in_memory: int | None = None  # the run's bound on fills kept in memory (rows)


def _load(strat: Strategy, spec: RunSpec) -> _Run:
    """Stage one: the bars (files, the store, arrays, or history another process holds in
    shared memory, replayed in place), the warm history before `trade_from`, the account."""
    from engine.clearing.account import Account

    d = spec.data
    data, given = d.source, {}
    if isinstance(data, Mapping) and data and all(isinstance(v, ShmArray) for v in data.values()):
        # History another process loaded once: replay it in place, read-only, never unlinked.
        given = dict(data)
        data = {s: np.array(shm.array) for s, shm in given.items()}  # results outlive the mapping
    bars, period = load_data(data, symbols=d.symbols, provider=d.provider,
                             timeframe=d.timeframe, start=d.start, end=d.end)
    skip = {s: 0 for s in bars}
    if d.trade_from is not None:
        first_traded = _to_epoch(d.trade_from)
        skip = {s: int(np.searchsorted(b["time"], first_traded)) for s, b in bars.items()}
        if all(skip[s] == len(b) for s, b in bars.items()):
            raise BacktestError(f"no bars at or after trade_from={d.trade_from}")
    config = spec.broker_config()
    # Room for an order every 16 bars before the order table grows: zeroed pages cost nothing
    # until an order is written (a doubling copies, and holds, every row).
    rows = sum(len(b) for b in bars.values()) // 16
    account = Account("backtest", list(bars), cash=spec.account.cash, config=config,
                      instruments=spec.account.instruments,
                      capacity=max(1024, 1 << rows.bit_length()))
    first = float(min(b["time"][skip[s]] for s, b in bars.items() if skip[s] < len(b)))
    clock = ReplayClock(first)
    broker = PaperBroker(account, clock)
    broker.match_on_submit = False
    broker.announce_accepts = overrides(type(strat), "on_order")
    reuse = {s: shm for s, shm in given.items() if s in bars and len(shm) == len(bars[s])}
    # The bars replay in place, held once, when numbered as a segment filled from its start
    # would number them (loaders and the store do); others are copied once and numbered, never
    # written to (they may be the caller's, or a loader's cache).
    for s, b in bars.items():
        if s not in reuse and not numbered(b):
            b = bars[s] = b.copy()
            b["index"] = np.arange(len(b))
    shms = {s: reuse.get(s) or HeldBars(b) for s, b in bars.items()}
    return _Run(bars, period, skip, shms, reuse, clock, broker, config,
                spec.measure.fills_in_memory)


def _collect(strat: Strategy, spec: RunSpec, run: _Run, fills: FillLog, step_sym: np.ndarray,
             steps: dict[str, Any], cancels: Any, lines: list[str]) -> BacktestResult:
    """The last stages: settle what is still open (`close_at_end`), then collect the equity
    curve, trades, orders and statistics into the result."""
    broker, period, cash = run.broker, run.period, spec.account.cash
    bars = {s: b[run.skip[s]:] for s, b in run.bars.items()}  # the traded part
    if spec.measure.close_at_end:
        fills.add(len(step_sym) - 1, close_positions(broker, _last_closes(bars, period)))
    times, equity, exposed = _equity(bars, step_sym, steps, fills, cash)
    m = spec.measure
    interval = (sharpe_ci(times, equity, cash, period, m.periods_per_year, m.risk_free)
                if m.bootstrap and len(times) else None)
    f = fills.rows
    trades = trade_table(f["sym"].astype(np.int64), f["size"] * f["side"], f["price"].copy(),
                         f["fee"].copy(), f["time"].copy(), fills.symbols, bars,
                         spec.measure.lots)
    stats = compute_stats(times, equity, exposed, trades, broker.account.fees,
                          cash, period=period, costs=spec.costs.describe(),
                          periods_per_year=m.periods_per_year, risk_free=m.risk_free,
                          bootstrap=m.bootstrap, interval=interval)
    return BacktestResult(strategy=strat.name, params=strat.params.model_dump(),
                          symbols=list(bars), timeframe=period, stats=stats, trades=trades,
                          equity=Curve(times, equity), fills=Fills(fills, broker.account.name),
                          bars=bars,
                          rejected=list(broker.rejections), log=lines,
                          orders=OrderLog.of(broker, cancels), lots=m.lots,
                          close_at_end=m.close_at_end)


def _last_closes(bars: dict[str, np.ndarray], period: int) -> dict[str, tuple[float, float]]:
    """Each symbol's last close and its time: where the replay's path through a bar puts its
    close (0.999 of the bar's period in)."""
    return {s: (float(b["time"][-1]) + period * 0.999, float(b["close"][-1]))
            for s, b in bars.items() if len(b)}


def evaluate_params(strategy_path: str, params: dict, history_tokens: dict[str, dict],
                    options: dict) -> dict[str, float]:
    """One sweep evaluation: attach the shared history read-only, backtest, return metrics.

    `options` is the run's description without its data (`RunSpec.options()`), with any
    per-job changes (a walk-forward window's start and end)."""
    attached = {s: ShmArray.attach(tok) for s, tok in history_tokens.items()}
    try:
        spec = RunSpec.build(**{**options, "bootstrap": False, "data": attached})
        result = run_backtest(strategy_path, spec=spec, params=params)
    finally:
        for shm in attached.values():
            shm.close()
    return {k: _clean(result.stats[k]) for k in SWEEP_METRICS}


class _LogLines(logging.Handler):
    """Keeps a strategy's log lines for its result."""

    def __init__(self, level: int, lines: list[str]) -> None:
        super().__init__(level)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _captured_log(strat: Strategy, level: str | int) -> Iterator[list[str]]:
    """The strategy's log lines at or above `level`, kept in a list while the replay runs."""
    if isinstance(level, str):
        number = logging.getLevelName(level.upper())
        if not isinstance(number, int):
            raise BacktestError(f"unknown log level {level!r}: use debug, info, warning or "
                                "error")
        level = number
    logger = logging.getLogger(f"strategy.{strat.name}")
    lines: list[str] = []
    handler = _LogLines(level, lines)
    before = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    strat.__dict__.pop("_logger", None)
    if _only_handler(logger, handler):
        # Strategy.log appends its lines directly, as (time, message) to stamp when read.
        strat.__dict__["_log_sink"] = lines.append
    try:
        yield lines
    finally:
        strat.__dict__.pop("_log_sink", None)
        logger.removeHandler(handler)
        logger.setLevel(before)


def _only_handler(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Whether `handler` is the only one an INFO record of `logger` reaches, with no filter
    on the way: then a line appended directly is what the handler would have kept."""
    if handler.level > logging.INFO or logging.root.manager.disable >= logging.INFO \
            or not logger.isEnabledFor(logging.INFO) or logger.filters:
        return False
    node: logging.Logger | None = logger
    while node is not None:
        if any(h is not handler for h in node.handlers):
            return False
        node = node.parent if node.propagate else None
    return True


def _run_ticks(strat: Strategy, spec: RunSpec) -> BacktestResult:
    """A tick replay's stages: load the recorded ticks, replay them through the live sampler
    and the paper book, settle and collect."""
    from engine.backtests.ticks_replay import replay_ticks
    from engine.clearing.account import Account
    from engine.store import list_tick_datasets, load_ticks

    d, m, cash = spec.data, spec.measure, spec.account.cash
    provider = d.provider
    names = [s.strip() for s in str(d.source).split(",") if s.strip()]
    stored = list_tick_datasets()
    ticks = {}
    for name in names:
        match = [i for i in stored if i.symbol.lower() == name.lower()
                 and (provider is None or i.provider == provider)]
        if not match:
            known = ", ".join(f"{i.provider}/{i.symbol}" for i in stored) or "none"
            raise BacktestError(f"no recorded ticks for {name!r} (recorded: {known}; record "
                                "with engine run --record)")
        rows = load_ticks(match[0].provider, match[0].symbol, _to_epoch(d.start),
                          _to_epoch(d.end))
        if len(rows) == 0:
            raise BacktestError(f"{name}: no ticks in the chosen range")
        ticks[match[0].symbol] = rows
    period = parse_timeframe(d.timeframe) if d.timeframe else 1
    config = spec.broker_config()
    account = Account("backtest", list(ticks), cash=cash, config=config,
                      instruments=spec.account.instruments)
    clock = ReplayClock(float(min(t["time"][0] for t in ticks.values())))
    # Ticks carry the live book: an order meets it at once, as in paper trading.
    broker = PaperBroker(account, clock)

    async def main() -> Any:
        use_clock(clock)
        return await replay_ticks(strat, ticks, period, broker, clock)

    try:
        fills, bars, times, equity, exposed, cancels = trio.run(main)
    except BacktestError:
        raise
    except Exception as exc:
        path = getattr(type(strat), "__source_path__", None)
        raise BacktestError(f"{strat.name} raised:\n{strategy_traceback(exc, path)}") from exc
    curve = np.zeros(len(times), dtype=[("time", np.int64), ("equity", np.float64),
                                         ("drawdown_pct", np.float64)])
    curve["time"] = times
    curve["equity"] = equity
    if m.close_at_end:
        fills += close_positions(broker, _last_closes(bars, period))
        if len(equity):
            curve["equity"][-1] = account.equity()  # flat now: its cash
    curve["drawdown_pct"] = drawdowns(curve["equity"]) if len(equity) else equity
    trades = build_trades(fills, bars, m.lots)
    stats = compute_stats(curve["time"], curve["equity"], exposed, trades, account.fees, cash,
                          period=period, costs=spec.costs.describe(),
                          periods_per_year=m.periods_per_year, risk_free=m.risk_free,
                          bootstrap=m.bootstrap)
    return BacktestResult(strategy=strat.name, params=strat.params.model_dump(),
                          symbols=list(ticks), timeframe=period, stats=stats, trades=trades,
                          equity=curve, fills=fills, bars=bars, rejected=list(broker.rejections),
                          orders=OrderLog.of(broker, cancels), lots=m.lots,
                          close_at_end=m.close_at_end)
