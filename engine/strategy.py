"""The strategy API users write against: `class MyStrat(Strategy)` in one file, and its loader.

A strategy declares typed parameters as class attributes and reacts to callbacks; through
`self.ctx` it reads closed bars, the latest quotes and the clock, and places orders. This module
knows nothing of providers, feeds or brokers beyond the small `OrderRouter` protocol.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from engine.clock import Clock
from engine.orders import CancelOrder, ModifyOrder, SubmitOrder
from engine.shm import ShmArray

__all__ = ["Strategy", "Context", "StrategyError", "load_strategy", "OrderRouter", "IntentLog"]

_RESERVED = {"symbols", "timeframe", "ctx", "name", "params", "blocking"}
CALLBACKS = ("on_start", "on_quote", "on_bar", "on_fill", "on_order_rejected", "on_order",
             "on_feed_status", "on_stop")

log = logging.getLogger("engine.strategy")


class StrategyError(Exception):
    """A strategy file or its parameters are wrong; the message names the file, line or parameter."""


class Strategy:
    """Base class of user strategies.

    Class attributes: `symbols` (default symbols), `timeframe` (default bar period, e.g. "1m"),
    `blocking` (True: live runs call its synchronous callbacks in its own worker thread from
    the start, for strategies that wait on I/O or compute for long), and any annotated attribute
    (`fast: int = 10`) becomes a typed parameter, validated and overridable from the command
    line with `-p fast=5`.
    """

    symbols: ClassVar[tuple[str, ...] | list[str]] = ()
    timeframe: ClassVar[str] = "1s"
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
        return type(self).__name__

    def log(self, message: str, *args: Any) -> None:
        """Log a line tagged with the strategy's name and the engine clock."""
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
    def on_fill(self, fill: Any) -> None: ...
    def on_order_rejected(self, rejection: Any) -> None: ...
    def on_feed_status(self, event: Any) -> None: ...
    def on_order(self, event: Any) -> None: ...
    def on_stop(self) -> None: ...


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
        self._positions[order.symbol] = self._positions.get(order.symbol, 0.0) + sign * order.size
        log.warning("order intended (no broker, not sent): %s", order.describe())

    def cancel(self, command: CancelOrder) -> None:
        self.cancels.append(command)
        log.warning("cancel intended (no broker, not sent): %s", command.client_id)

    def modify(self, command: ModifyOrder) -> None:
        log.warning("modify intended (no broker, not sent): %s", command.model_dump(
            exclude_none=True, exclude={"type", "time", "strategy"}))

    def position(self, symbol: str) -> float:
        return self._positions.get(symbol, 0.0)


class Context:
    """What a running strategy sees: closed bars, latest quotes, the clock, and order entry."""

    def __init__(self, *, symbols: list[str], timeframe: int, bars: Mapping[str, ShmArray],
                 quotes: Mapping[str, dict], clock: Clock, router: OrderRouter,
                 strategy_name: str = "") -> None:
        self.symbols = list(symbols)
        self.timeframe = timeframe
        self._bars = bars
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
        # One mutable cell per symbol, shared with its indicator lines: the count of visible bars.
        self._seen = {s: [len(shm)] for s, shm in bars.items()}

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
        import datetime as _dt

        return _dt.datetime.fromtimestamp(self.now, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    def ohlcv(self, symbol: str) -> np.ndarray:
        """Closed bars of `symbol` (ohlc_dtype rows, oldest first), read-only, without a copy.

        The bar still forming is never included, so a strategy cannot look ahead.
        """
        try:
            shm = self._bars[symbol]
        except KeyError:
            raise KeyError(f"no bars for {symbol!r}; this run has {self.symbols}") from None
        arr = shm.array
        view = arr[: self._seen[symbol][0]].view()
        view.flags.writeable = False
        return view

    def indicator(self, kind: str, *params: Any, symbol: str | None = None,
                  fields: tuple[str, ...] | None = None, **options: Any) -> Any:
        """Declare an indicator over a symbol's closed bars (default: the first symbol) and
        return its Line, or a tuple of Lines for several outputs (MACD, Bollinger bands).

        `kind` is a kernel name (`sma`, `ema`, `rsi`, `macd`, `bbands`, `atr`, `cross`, ...),
        `params` its parameters (periods in bars), `fields` the bar fields it reads (default:
        the kernel's own, e.g. close). Indicators of indicators take the input lines among
        `params`: `ctx.indicator("cross", fast, slow)` is +1 where `fast` crosses above `slow`,
        -1 where below. Keyword `options` go to the kernel (`indicator("sma", 10, exact=True)`).
        Read `line[-1]` in on_bar: the value at the newest closed bar.
        """
        from engine.indicators import make_lines

        return make_lines(self, kind, params, symbol, fields, options)

    def quote(self, symbol: str) -> dict | None:
        """The latest quote message of `symbol`."""
        return self._quotes.get(symbol)

    def position(self, symbol: str) -> float:
        """Signed position in units (negative is short)."""
        return self.router.position(symbol)

    def _order(self, symbol: str, side: str, size: float, limit: float | None,
               stop: float | None, tif: str, reduce_only: bool) -> str:
        if symbol not in self.symbols:
            raise ValueError(f"order for {symbol!r}, which this run does not trade ({self.symbols})")
        order_type = ("stop_limit" if stop is not None and limit is not None else "stop"
                      if stop is not None else "limit" if limit is not None else "market")
        order = SubmitOrder(client_id=self._next_id(), symbol=symbol, side=side, size=size,
                            order_type=order_type,
                            limit_price=limit, stop_price=stop, tif=tif, reduce_only=reduce_only,
                            time=self.now, strategy=self._name)
        self.router.submit(order)
        return order.client_id

    def buy(self, symbol: str, size: float, *, limit: float | None = None,
            stop: float | None = None, tif: str = "GTC", reduce_only: bool = False) -> str:
        """Buy `size` units; a market order unless `limit` and/or `stop` are given. Returns the
        client order id."""
        return self._order(symbol, "buy", size, limit, stop, tif, reduce_only)

    def sell(self, symbol: str, size: float, *, limit: float | None = None,
             stop: float | None = None, tif: str = "GTC", reduce_only: bool = False) -> str:
        """Sell `size` units (opens or adds to a short when flat or short)."""
        return self._order(symbol, "sell", size, limit, stop, tif, reduce_only)

    def target(self, symbol: str, size: float, *, limit: float | None = None,
               stop: float | None = None, tif: str = "GTC") -> str | None:
        """Trade toward a signed target position in `symbol` (`-10`: short 10, `0`: flat) with
        one order for the difference between `size` and the position plus the orders still
        working, when the broker reports them (paper and backtests do). A reversal is one
        order. Returns its client order id, or None when nothing is left to do."""
        working = getattr(self.router, "working_position", None)
        have = self.position(symbol) + (working(symbol) if working is not None else 0.0)
        delta = size - have
        if abs(delta) <= 1e-12 * max(1.0, abs(size)):
            return None
        return self._order(symbol, "buy" if delta > 0 else "sell", abs(delta), limit, stop, tif,
                           False)

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
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise StrategyError(f"strategy file {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(mod_name, None)
        raise StrategyError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if Path(f.filename).resolve() == path.resolve()]
        where = f"{path}:{frames[-1].lineno}" if frames else str(path)
        raise StrategyError(f"{where}: import failed: {type(exc).__name__}: {exc}") from None
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
