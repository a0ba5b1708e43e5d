"""The strategy API users write against: `class MyStrat(Strategy)` in one file, and its loader.

A strategy declares typed parameters as class attributes and reacts to callbacks; through
`self.ctx` it reads closed bars, the latest quotes and the clock, and places orders. This module
knows nothing of providers, feeds or brokers beyond the small `OrderRouter` protocol.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import math
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from engine.account_view import AccountAccess
from engine.clock import Clock
from engine.file_modules import module_from_file
from engine.instruments import Instrument
from engine.orders import CancelOrder, LinkOrders, ModifyOrder, SubmitOrder, market_order
from engine.shm import ShmArray

__all__ = ["Strategy", "Context", "StrategyError", "load_strategy", "OrderRouter", "IntentLog"]

_RESERVED = {"symbols", "timeframe", "timeframes", "bar_grace", "ctx", "name", "params",
             "lot_sizes", "warmup", "blocking"}
CALLBACKS = ("on_start", "on_quote", "on_bar", "on_bars", "on_fill", "on_order_rejected", "on_order",
             "on_feed_status", "on_stop")

log = logging.getLogger("engine.strategy")

_YEAR_10000 = 253402300800  # epoch s: the first instant ISO 8601's four-digit years cannot name
# The parts of a time of day, joined instead of formatted: log lines stamp every bar's close.
_HH_MM = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
_SS_Z = [f"{sec:02d}Z" for sec in range(60)]
_day: tuple[int, str] = (-1, "")  # the day `stamp` formatted last, and its date


def stamped_line(kept: tuple[float | None, Any]) -> str:
    """A log line `Strategy.log` kept as (time, message): the line the logging record would
    have rendered, "<ISO 8601 time> <message>"."""
    t, text = kept
    return f"{stamp(t) if t is not None else ''} {text}"


def stamp(t: float) -> str:
    """Epoch seconds `t` as the ISO 8601 UTC text a log line carries (`Context.now_str`)."""
    global _day
    if type(t) is int or (isinstance(t, float) and t.is_integer()):
        # Whole seconds since 1970 (every bar close of a replay): the date formatted once a
        # day, the time of day by arithmetic.
        if 0 <= t < _YEAR_10000:
            day, second = divmod(int(t), 86400)
            known = _day
            if day != known[0]:
                known = _day = (day, time.strftime("%Y-%m-%dT", time.gmtime(day * 86400)))
            minute, second = divmod(second, 60)
            return known[1] + _HH_MM[minute] + _SS_Z[second]
    from engine.timefmt import iso

    return iso(t) or ""


class StrategyError(Exception):
    """A strategy file or its parameters are wrong; the message names the file, line or parameter."""


class Strategy:
    """Base class of user strategies.

    Class attributes: `symbols` (default symbols), `timeframe` (default bar period, e.g. "1m"),
    `timeframes` (higher timeframes built from it, e.g. ("1h", "1d"): `ctx.ohlcv(symbol, "1h")`,
    indicators with `timeframe="1h"`, and a bar callback taking a second argument hears which
    timeframe closed; engine.timeframes), `bar_grace` (seconds a live `on_bars` step waits for
    its last symbols before it is called with those that closed; default 2),
    `lot_sizes` (units per lot by symbol, for symbols whose instrument the run does not give a
    lot: see engine.instruments), `warmup`
    (closed bars its signals need; default: derived from its indicators, engine.warmup),
    `blocking` (True: live runs call its synchronous callbacks in its own worker thread from
    the start, for strategies that wait on I/O or compute for long), and any annotated attribute
    (`fast: int = 10`) becomes a typed parameter, validated and overridable from the command
    line with `-p fast=5`.
    """

    symbols: ClassVar[tuple[str, ...] | list[str]] = ()
    timeframe: ClassVar[str] = "1s"
    timeframes: ClassVar[tuple[str, ...] | list[str]] = ()
    bar_grace: ClassVar[float] = 2.0
    lot_sizes: ClassVar[Mapping[str, float]] = {}
    warmup: ClassVar[int | None] = None
    blocking: ClassVar[bool] = False
    _params_model: ClassVar[type[BaseModel]]
    ctx: Context

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        fields: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if klass in (Strategy, object):
                continue
            for name, annotation in inspect.get_annotations(klass).items():
                if name.startswith("_") or name in _RESERVED:
                    continue
                if annotation is ClassVar or get_origin(annotation) is ClassVar:
                    continue
                if isinstance(annotation, str):
                    annotation = eval(annotation, vars(sys.modules.get(klass.__module__, sys)))  # noqa: S307
                default = klass.__dict__.get(name, ...)
                fields[name] = (annotation, default)
        cls._params_model = create_model(
            f"{cls.__name__}Params", __config__=ConfigDict(extra="forbid", frozen=True), **fields
        )

    def __init__(self, **params: Any) -> None:
        self.params = self.validate_params(params)
        for name, value in self.params.model_dump().items():
            setattr(self, name, value)

    @classmethod
    def param_names(cls) -> list[str]:
        return list(cls._params_model.model_fields)

    @classmethod
    def validate_params(cls, params: Mapping[str, Any]) -> BaseModel:
        """Check parameter overrides (strings from the CLI are coerced to the declared types)."""
        unknown = sorted(set(params) - set(cls._params_model.model_fields))
        if unknown:
            known = ", ".join(cls.param_names()) or "none"
            raise StrategyError(f"{cls.__name__} has no parameter {unknown[0]!r} (parameters: {known})")
        try:
            return cls._params_model.model_validate(dict(params))
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ".".join(str(p) for p in err["loc"]) or "?"
            got = params.get(name, "<missing>")
            raise StrategyError(f"{cls.__name__} parameter {name!r}: {err['msg']} (got {got!r})") from None

    @property
    def name(self) -> str:
        """The strategy's name on its account: the class name, unless set (a run gives later
        instances of one class on one account `Name#2`, `Name#3`: `engine.books`)."""
        return self.__dict__.get("_name") or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_name"] = value

    def log(self, message: str, *args: Any) -> None:
        """Log a line tagged with the strategy's name and the engine clock."""
        sink = self.__dict__.get("_log_sink")
        if sink is not None:
            # A backtest keeping the lines, with no other handler or filter to hear them: the
            # message as the logging record would render it, without building the record, and
            # the clock's time, stamped in front when the lines are read (`stamped_line`).
            if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
                args = args[0]  # as logging takes a lone mapping
            try:
                text = message % args if args else message
            except (TypeError, ValueError, KeyError):
                pass  # a bad format: let logging report it as it does
            else:
                ctx = getattr(self, "ctx", None)
                sink((ctx.now if ctx else None, text))
                return
        logger = self.__dict__.get("_logger")
        if logger is None:
            logger = self.__dict__["_logger"] = logging.getLogger(f"strategy.{self.name}")
        if not logger.isEnabledFor(logging.INFO):
            return  # backtests replay millions of bars: don't format what nobody reads
        ctx = getattr(self, "ctx", None)
        when = ctx.now_str() if ctx else ""
        logger.info(f"{when} {message}", *args)

    # Callbacks: override any of them, plain or async.
    def on_start(self) -> None: ...
    def on_quote(self, quote: dict) -> None: ...
    def on_bar(self, symbol: str) -> None: ...
    def on_bars(self, symbols: list[str]) -> None: ...
    def on_fill(self, fill: Any) -> None: ...
    def on_order_rejected(self, rejection: Any) -> None: ...
    def on_feed_status(self, event: Any) -> None: ...
    def on_order(self, event: Any) -> None: ...
    def on_stop(self) -> None: ...


def overrides(cls: type, name: str) -> bool:
    """Whether a Strategy subclass defines callback `name` (the base class's do nothing)."""
    return getattr(cls, name) is not getattr(Strategy, name)


class OrderRouter(Protocol):
    def submit(self, order: SubmitOrder) -> None: ...
    def cancel(self, command: CancelOrder) -> None: ...
    def position(self, symbol: str) -> float: ...


class IntentLog:
    """The order router of a run without a broker: it logs each intended order and keeps the
    position those orders would give if they filled, so `close` knows what to send."""

    def __init__(self) -> None:
        self.orders: list[SubmitOrder] = []
        self.cancels: list[CancelOrder] = []
        self._positions: dict[str, float] = {}

    def submit(self, order: SubmitOrder) -> None:
        self.orders.append(order)
        sign = 1.0 if order.side == "buy" else -1.0
        # An order sized as a fraction of equity has no size without an account: none counted.
        self._positions[order.symbol] = self._positions.get(order.symbol, 0.0) + sign * order.units
        log.warning("order intended (no broker, not sent): %s", order.describe())

    def cancel(self, command: CancelOrder) -> None:
        self.cancels.append(command)
        log.warning("cancel intended (no broker, not sent): %s", command.client_id)

    def modify(self, command: ModifyOrder) -> None:
        log.warning("modify intended (no broker, not sent): %s", command.model_dump(
            exclude_none=True, exclude={"type", "time", "strategy"}))

    def position(self, symbol: str) -> float:
        return self._positions.get(symbol, 0.0)


class Context(AccountAccess):
    """What a running strategy sees: closed bars, latest quotes, the clock, order entry, and the
    account (cash, equity, holdings, working orders, orders sized by value; see AccountAccess)."""

    def __init__(self, *, symbols: list[str], timeframe: int, bars: Mapping[str, ShmArray],
                 quotes: Mapping[str, dict], clock: Clock, router: OrderRouter,
                 strategy_name: str = "") -> None:
        self.symbols = list(symbols)
        self.timeframe = timeframe
        self._bars = dict(bars)  # its own: higher timeframes add series to it
        self._quotes = quotes
        self.clock = clock
        self.router = router
        self._name = strategy_name
        # Client order ids: unique per run live (a restarted paper account keeps its old ones),
        # and the same on every replay of a backtest (set_id_prefix("o")).
        self._id_prefix = f"{strategy_name or 's'}.{int(clock.now())}."
        self._id_count = 0
        # Bars a strategy may see end at the last close event it has been handed: a strategy
        # behind its mailbox never sees a bar before its on_bar, whatever the feed has stored.
        # One mutable cell per symbol, shared with its indicator lines: the count of visible bars,
        # counted from the absolute row index `_origin` (the oldest bar held at the start), so
        # it stays right when the bar segment rolls.
        self._origin: dict[str, int] = {}
        self._seen: dict[str, list[int]] = {}
        for s, shm in bars.items():
            first, last = shm.span()
            self._origin[s] = first
            self._seen[s] = [last - first]
        self._lot_sizes: dict[str, float] = {}
        self._sources: list[Any] = []  # indicator sources declared through `indicator`
        # Higher timeframes (engine.timeframes): per symbol, their bars folded from the finest;
        # their series sit in _bars/_origin/_seen under (symbol, seconds).
        self._higher: dict[str, list[Any]] = {}
        self._tf_labels: dict[int, str] = {}
        self._now_cache: tuple[float, str] = (math.nan, "")
        # A replay's broker may take plain market orders without their SubmitOrder being built
        # (`PaperBroker.submit_market`): set by the replay when it may.
        self._quick_submit: Any = None
        self._quick_held: Any = None  # and the position plus working orders, in one call

    def set_id_prefix(self, prefix: str) -> None:
        self._id_prefix = prefix
        self._id_count = 0

    def _next_id(self) -> str:
        self._id_count += 1
        return f"{self._id_prefix}{self._id_count}"

    def bar_closed(self, symbol: str) -> None:
        """Make the next stored bar of `symbol` visible (the scheduler calls this in order)."""
        self._seen[symbol][0] += 1

    @property
    def now(self) -> float:
        """Engine clock, epoch seconds."""
        return self.clock.now()

    def now_str(self) -> str:
        """The engine clock as ISO 8601 UTC (what `Strategy.log` stamps its lines with)."""
        t = self.now  # ThreadContext's reads the loop's clock from a worker thread
        if t == self._now_cache[0]:
            return self._now_cache[1]
        text = stamp(t)
        self._now_cache = (t, text)
        return text

    @property
    def lot_sizes(self) -> dict[str, float]:
        """The strategy's `lot_sizes` (units per lot by symbol)."""
        return self._lot_sizes

    @lot_sizes.setter
    def lot_sizes(self, lots: Mapping[str, float]) -> None:
        # One source of truth: the broker's instruments take them (for symbols whose lot the
        # run or the venue does not set); a run without a broker keeps them here.
        for symbol, lot in lots.items():
            if not (isinstance(lot, int | float) and lot > 0 and math.isfinite(lot)):
                raise ValueError(f"lot size of {symbol!r} must be a positive number, "
                                 f"got {lot!r}")
        self._lot_sizes = dict(lots)
        declare = getattr(self.router, "declare_lots", None)
        if declare is not None and lots:
            declare(self._lot_sizes)

    def instrument(self, symbol: str) -> Instrument:
        """`symbol`'s trading rules: lot size, tick size, minimum notional (engine.instruments;
        from the venue live, from the run's settings for file data)."""
        rules = getattr(self.router, "instrument", None)
        if rules is not None:
            return rules(symbol)
        return Instrument(symbol=symbol, lot_size=self._lot_sizes.get(symbol))

    def lot_size(self, symbol: str) -> float:
        """Units per lot of `symbol`: sizes the engine computes (by value, as a fraction of
        equity) round toward zero to whole lots; 1 unit when its instrument sets no lot."""
        return self.instrument(symbol).sizing_lot

    def bar_time(self, symbol: str, ago: int = 0, timeframe: str | None = None) -> float:
        """The open time (epoch s) of the newest closed bar of `symbol` (`ago=1`: the one
        before) on `timeframe` (default: the finest): the period the bar covers, unlike `now`,
        which reads its close."""
        bars = self.ohlcv(symbol, timeframe)
        if ago < 0 or ago >= len(bars):
            raise IndexError(f"{symbol!r} has {len(bars)} closed bars; no bar {ago} ago")
        return float(bars["time"][len(bars) - 1 - ago])

    def bar_date(self, symbol: str, ago: int = 0, timeframe: str | None = None
                 ) -> datetime.date:
        """The UTC date of `bar_time(symbol, ago, timeframe)`: a daily bar's trading day.
        `ctx.bar_date(s).month != ctx.bar_date(s, 1).month` is the month's first bar."""
        return datetime.datetime.fromtimestamp(self.bar_time(symbol, ago, timeframe),
                                               datetime.UTC).date()

    def _key(self, symbol: str, timeframe: str | int | None) -> Any:
        """The series of `symbol` on `timeframe` (None: the finest), checked as declared."""
        if timeframe is None:
            return symbol
        from engine.sampler import format_timeframe, parse_timeframe

        seconds = parse_timeframe(timeframe)
        if seconds == self.timeframe:
            return symbol
        if seconds not in self._tf_labels:
            have = ", ".join(format_timeframe(s) for s in sorted(self._tf_labels)) or \
                format_timeframe(self.timeframe)
            raise KeyError(f"timeframe {timeframe!r} is not declared: add it to the strategy's "
                           f"timeframes (this run has {have})")
        return (symbol, seconds)

    def ohlcv(self, symbol: str, timeframe: str | None = None) -> np.ndarray:
        """Closed bars of `symbol` (ohlc_dtype rows, oldest first), read-only, without a copy,
        on `timeframe` (one the strategy declares in `timeframes`; default the finest).

        The bar still forming is never included, so a strategy cannot look ahead. A live bar
        segment keeps its newest rows (it rolls when full): take a fresh view in each callback.
        """
        key = self._key(symbol, timeframe)
        try:
            shm = self._bars[key]
        except KeyError:
            raise KeyError(f"no bars for {symbol!r}; this run has {self.symbols}") from None
        view = shm.window(self._origin[key] + self._seen[key][0]).view()
        view.flags.writeable = False
        return view

    def indicator(self, kind: str, *params: Any, symbol: str | None = None,
                  fields: tuple[str, ...] | None = None, timeframe: str | None = None,
                  **options: Any) -> Any:
        """Declare an indicator over a symbol's closed bars (default: the first symbol) on
        `timeframe` (a declared one; default the finest) and return its Line, or a tuple of
        Lines for several outputs (MACD, Bollinger bands).

        `kind` is a kernel name (`sma`, `ema`, `rsi`, `macd`, `bbands`, `atr`, `cross`, ...),
        `params` its parameters (periods in bars), `fields` the bar fields it reads (default:
        the kernel's own, e.g. close). Indicators of indicators take the input lines among
        `params`: `ctx.indicator("cross", fast, slow)` is +1 where `fast` crosses above `slow`,
        -1 where below. Keyword `options` go to the kernel (`indicator("sma", 10, exact=True)`).
        Read `line[-1]` in on_bar: the value at the newest closed bar.
        """
        from engine.indicators import make_lines

        return make_lines(self, kind, params, symbol, fields, options, timeframe)

    def quote(self, symbol: str) -> dict | None:
        """The latest quote message of `symbol`."""
        return self._quotes.get(symbol)

    def position(self, symbol: str) -> float:
        """Signed position in units (negative is short)."""
        return self.router.position(symbol)

    def _size(self, side: str, size: float | str) -> dict[str, float]:
        """An order's size fields: units as given, or "95%" as a fraction of the equity
        available (refused beyond the account's leverage, or at or below zero)."""
        if not isinstance(size, str):
            return {"size": size}
        text = size.strip()
        if not text.endswith("%"):
            raise ValueError(f"{side} size {size!r}: give units, or a percent of equity like "
                             f"'95%'")
        try:
            frac = float(text[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"{side} size {size!r}: not a percent") from None
        if not (frac > 0 and math.isfinite(frac)):
            raise ValueError(f"{side} size {size!r}: a percent of equity above 0")
        account = getattr(self.router, "account", None)
        cap = account.config.risk.leverage if hasattr(account, "config") else None
        if cap is not None and frac > cap * (1 + 1e-12):
            raise ValueError(f"{side} size {size!r} is beyond the account's leverage of "
                             f"{cap:g} ({cap * 100:g}% of equity)")
        return {"equity_fraction": frac}

    def _order(self, symbol: str, side: str, size: float | str, limit: float | None,
               stop: float | None, tif: str, reduce_only: bool,
               protect: dict[str, float] | None = None, post_only: bool = False) -> str:
        if symbol not in self.symbols:
            raise ValueError(f"order for {symbol!r}, which this run does not trade ({self.symbols})")
        if limit is None and stop is None and not protect and tif == "GTC" and not post_only \
                and type(size) is float and 0.0 < size < math.inf \
                and type(reduce_only) is bool:
            # A plain market order in units, every part checked here: built without the
            # model's validation (what the replay pays for each of its orders).
            quick = self._quick_submit
            # (The short way is taken only by a plain Context: its clock is its own.)
            now = self.now if quick is None else self.clock.now()
            client_id = self._next_id()
            if quick is not None and quick(client_id, symbol, side, size, reduce_only,
                                           float(now), self._name):
                return client_id
            self.router.submit(market_order(client_id, symbol, side, size, reduce_only,
                                            None if now is None else float(now), self._name))
            return client_id
        order_type = ("stop_limit" if stop is not None and limit is not None else "stop"
                      if stop is not None else "limit" if limit is not None else "market")
        order = SubmitOrder(client_id=self._next_id(), symbol=symbol, side=side,
                            **self._size(side, size), order_type=order_type,
                            limit_price=limit, stop_price=stop, tif=tif, reduce_only=reduce_only,
                            post_only=post_only, time=self.now, strategy=self._name,
                            **(protect or {}))
        self.router.submit(order)
        return order.client_id

    def _protect(self, symbol: str, side: str, limit: float | None, stop_loss: Any,
                 take_profit: Any, trail: Any) -> dict[str, float]:
        """The protective fields of an entry: prices as given, "5%" as fractions; a price on
        the wrong side of the entry's is refused here, before anything is sent."""
        out: dict[str, float] = {}
        for name, value in (("stop_loss", stop_loss), ("take_profit", take_profit),
                            ("trail", trail)):
            if value is None:
                continue
            if isinstance(value, str):
                text = value.strip()
                if not text.endswith("%"):
                    raise ValueError(f"{name}={value!r}: give a price, or a percent like '5%'")
                try:
                    frac = float(text[:-1]) / 100.0
                except ValueError:
                    raise ValueError(f"{name}={value!r}: not a percent") from None
                if not 0 < frac < (1 if name != "take_profit" else math.inf):
                    raise ValueError(f"{name}={value!r}: a percent between 0 and 100")
                out[f"{name}_pct"] = frac
            else:
                price = float(value)
                if not (price > 0 and math.isfinite(price)):
                    raise ValueError(f"{name}={value!r}: must be a positive price")
                out[name] = price
        if "stop_loss" in out or "take_profit" in out:
            ref = limit if limit is not None else self._price(symbol)
            buy = side == "buy"
            sl, tp = out.get("stop_loss"), out.get("take_profit")
            if sl is not None and (sl >= ref if buy else sl <= ref):
                raise ValueError(f"stop_loss={sl:g} is on the wrong side of {ref:g}: a {side}'s "
                                 f"stop-loss goes {'below' if buy else 'above'} the entry")
            if tp is not None and (tp <= ref if buy else tp >= ref):
                raise ValueError(f"take_profit={tp:g} is on the wrong side of {ref:g}: a "
                                 f"{side}'s take-profit goes {'above' if buy else 'below'} it")
        return out

    def buy(self, symbol: str, size: float | str, *, limit: float | None = None,
            stop: float | None = None, tif: str = "GTC", reduce_only: bool = False,
            stop_loss: float | str | None = None, take_profit: float | str | None = None,
            trail: float | str | None = None, post_only: bool = False) -> str:
        """Buy `size` units, or a percent of the equity available ("95%", up to the leverage:
        resolved when it fills, in whole lots at the fill price with the fee included); a
        market order unless `limit` and/or `stop` are given. Returns the client order id.
        `stop_loss`, `take_profit` (a price, or a percent of the average entry price such as
        "5%") and `trail` (a trailing stop's distance in price units, or "3%") protect the
        position it opens: they go live as it fills, cancel each other, and are cancelled when
        the position is closed another way. `post_only` (a GTC or DAY limit): the order only
        rests on the book; one that would take liquidity when it arrives is rejected."""
        protect = self._protect(symbol, "buy", limit, stop_loss, take_profit, trail)
        return self._order(symbol, "buy", size, limit, stop, tif, reduce_only, protect,
                           post_only)

    def sell(self, symbol: str, size: float | str, *, limit: float | None = None,
             stop: float | None = None, tif: str = "GTC", reduce_only: bool = False,
             stop_loss: float | str | None = None, take_profit: float | str | None = None,
             trail: float | str | None = None, post_only: bool = False) -> str:
        """Sell `size` units, or a percent of the equity available ("95%", as `buy`'s; opens
        or adds to a short when flat or short); protection and `post_only` as `buy`'s."""
        protect = self._protect(symbol, "sell", limit, stop_loss, take_profit, trail)
        return self._order(symbol, "sell", size, limit, stop, tif, reduce_only, protect,
                           post_only)

    def oco(self, first: str, second: str) -> None:
        """Make two working orders one-cancels-the-other: the first fill of either cancels
        the other."""
        link = getattr(self.router, "link", None)
        if link is None:
            raise RuntimeError("this run has no broker that links orders (use --paper)")
        link(LinkOrders(client_ids=(first, second), time=self.now, strategy=self._name))

    def target(self, symbol: str, size: float, *, limit: float | None = None,
               stop: float | None = None, tif: str = "GTC",
               stop_loss: float | str | None = None, take_profit: float | str | None = None,
               trail: float | str | None = None) -> str | None:
        """Trade toward a signed target position in `symbol` (`-10`: short 10, `0`: flat) with
        one order for the difference between `size` and the position plus the orders still
        working, when the broker reports them (paper and backtests do). A reversal is one
        order. Returns its client order id, or None when nothing is left to do. Protection as
        `buy`'s, on an order that moves the position away from zero."""
        held = self._quick_held
        if held is not None:
            have = held(symbol)
        else:
            working = getattr(self.router, "working_position", None)
            have = self.position(symbol) + (working(symbol) if working is not None else 0.0)
        delta = size - have
        if abs(delta) <= 1e-12 * max(1.0, abs(size)):
            return None
        side = "buy" if delta > 0 else "sell"
        protect = (self._protect(symbol, side, limit, stop_loss, take_profit, trail)
                   if stop_loss is not None or take_profit is not None or trail is not None
                   else None)
        return self._order(symbol, side, abs(delta), limit, stop, tif, False, protect)

    def close(self, symbol: str) -> str | None:
        """Flatten the position in `symbol` at market; None when already flat."""
        pos = self.position(symbol)
        if pos == 0:
            return None
        side = "sell" if pos > 0 else "buy"
        return self._order(symbol, side, abs(pos), None, None, "GTC", True)

    def cancel(self, client_id: str) -> None:
        """Cancel a working order by its client id."""
        self.router.cancel(CancelOrder(client_id=client_id, time=self.now, strategy=self._name))

    def modify(self, client_id: str, *, size: float | None = None, limit: float | None = None,
               stop: float | None = None) -> None:
        """Change a working order's total size and/or its limit or stop price."""
        modify = getattr(self.router, "modify", None)
        if modify is None:
            raise RuntimeError("this run has no broker that can modify orders (use --paper)")
        modify(ModifyOrder(client_id=client_id, size=size, limit_price=limit, stop_price=stop,
                           time=self.now, strategy=self._name))


def _user_frames(exc: BaseException, path: Path) -> str:
    """The traceback lines that belong to the user's file, or the last frame if none do."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()] or frames[-1:]
    return "".join(traceback.format_list(mine)).rstrip()


def strategy_traceback(exc: BaseException, path: Path | None) -> str:
    """Format an exception raised inside a strategy with only the strategy's own frames."""
    frames = _user_frames(exc, path) if path else "".join(traceback.format_tb(exc.__traceback__))
    return f"{frames}\n{type(exc).__name__}: {exc}"


def load_strategy(path: str | Path, class_name: str | None = None) -> type[Strategy]:
    """Import a strategy file and return its Strategy subclass, with a clear error if it can't."""
    path = Path(path)
    if not path.exists():
        raise StrategyError(f"strategy file {str(path)!r} does not exist")
    if path.suffix != ".py":
        raise StrategyError(f"strategy file {str(path)!r} is not a .py file")
    mod_name = f"_engine_strategy_{path.stem}"
    try:
        module = module_from_file(mod_name, path)
    except SyntaxError as exc:
        raise StrategyError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if Path(f.filename).resolve() == path.resolve()]
        where = f"{path}:{frames[-1].lineno}" if frames else str(path)
        raise StrategyError(f"{where}: import failed: {type(exc).__name__}: {exc}") from None
    if module is None:
        raise StrategyError(f"strategy file {str(path)!r} cannot be imported")
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Strategy) and obj is not Strategy
             and obj.__module__ == mod_name]
    if class_name:
        found = [c for c in found if c.__name__ == class_name]
        if not found:
            raise StrategyError(f"{path} defines no Strategy subclass named {class_name!r}")
    if not found:
        raise StrategyError(f"{path} defines no Strategy subclass (class MyStrategy(Strategy): ...)")
    if len(found) > 1:
        names = ", ".join(c.__name__ for c in found)
        raise StrategyError(f"{path} defines several strategies ({names}); keep one per file")
    cls = found[0]
    cls.__source_path__ = path.resolve()  # type: ignore[attr-defined]
    return cls
