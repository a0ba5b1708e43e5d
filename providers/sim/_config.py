"""The sim provider's options and the market they describe: parsing, validation and the anchor.

The anchor is the epoch second where history ends and the live stream begins. It is fixed once
per configuration, from `start_time` or else from the wall clock at first use; this is the only
place the provider reads the wall clock.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.clock import current_clock

from . import _market
from ._history import History
from ._symbols import SymbolSpec

MAX_TICK_RATE = 10_000_000.0


@dataclass(frozen=True)
class SimConfig:
    seed: int = 7
    tick_rate: float = 300.0  # trade + book ticks per second per symbol
    start_time: int | None = None  # anchor, epoch seconds; None: the wall clock at first use
    volatility: float | None = None  # annualized, fraction; None: each symbol's own
    jump_intensity: float = 1.0  # jumps per hour per symbol
    jump_size: float | None = None  # std of a jump's log size; None: 1 % of the annual vol
    max_msg_rate: float | None = None  # messages per second per symbol; None: one per event


def _reject_bool(name: str, value: object) -> None:
    if isinstance(value, bool):
        raise ValueError(f"sim option {name}: expected a number, got {value!r}")


def _int(name: str, value: object, lo: int) -> int:
    _reject_bool(name, value)
    try:
        out = int(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
        if not isinstance(value, str | int) and out != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"sim option {name}: expected an integer, got {value!r}") from None
    if out < lo:
        raise ValueError(f"sim option {name}: must be >= {lo}, got {out}")
    return out


def _float(name: str, value: object, lo: float, hi: float = math.inf, *, open_lo: bool = False):
    _reject_bool(name, value)
    try:
        if isinstance(value, str):
            text = value.strip().lower()
            scale = {"k": 1e3, "m": 1e6}.get(text[-1:], 1.0)
            out = float(text[:-1] if scale != 1.0 else text) * scale
        else:
            out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"sim option {name}: expected a number, got {value!r}") from None
    if not math.isfinite(out) or out < lo or (open_lo and out == lo) or out > hi:
        bound = f"> {lo}" if open_lo else f">= {lo}"
        upper = f" and <= {hi:g}" if math.isfinite(hi) else ""
        raise ValueError(f"sim option {name}: must be {bound}{upper}, got {value!r}")
    return out


def _optional(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))


def _start_time(value: object) -> int | None:
    if _optional(value) or (isinstance(value, str) and value.strip().lower() == "now"):
        return None
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            try:
                dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(
                    "sim option start_time: expected epoch seconds or an ISO 8601 time, "
                    f"got {value!r}"
                ) from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return math.floor(dt.timestamp())
    return math.floor(_float("start_time", value, 0.0))


_PARSERS = {
    "seed": lambda v: _int("seed", v, 0),
    "tick_rate": lambda v: _float("tick_rate", v, 0.0, MAX_TICK_RATE, open_lo=True),
    "start_time": _start_time,
    "volatility": lambda v: None if _optional(v) else _float("volatility", v, 0.0, 20.0),
    "jump_intensity": lambda v: _float("jump_intensity", v, 0.0, 3600.0),
    "jump_size": lambda v: None if _optional(v) else _float("jump_size", v, 0.0, 1.0),
    "max_msg_rate": lambda v: (
        None if _optional(v) or v in (0, "0") else _float("max_msg_rate", v, 100.0)
    ),
}

# Environment variables that set defaults; configure() options override them.
ENV = {"seed": "ENGINE_SIM_SEED", "tick_rate": "ENGINE_SIM_TICK_RATE",
       "start_time": "ENGINE_SIM_START_TIME"}  # fmt: skip


def parse(options: dict[str, Any]) -> SimConfig:
    """Build a config from the defaults, the ENGINE_SIM_* variables and then `options`."""
    unknown = sorted(set(options) - set(_PARSERS))
    if unknown:
        raise ValueError(
            f"sim has no option {', '.join(unknown)}; options are {', '.join(_PARSERS)}"
        )
    values: dict[str, Any] = {}
    for name, var in ENV.items():
        raw = os.environ.get(var)
        if raw is not None and raw.strip():
            try:
                values[name] = _PARSERS[name](raw)
            except ValueError as exc:
                raise ValueError(f"environment variable {var}: {exc}") from None
    for name, value in options.items():
        values[name] = _PARSERS[name](value)
    return SimConfig(**values)


def _now() -> float:
    # Inside a run, the engine clock (virtual under a MockClock); outside one, the wall clock.
    try:
        return current_clock().now()
    except RuntimeError:
        return time.time()


class Market:
    """One configuration of the simulated market, with its anchor and history caches."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._anchor: int | None = config.start_time
        self._histories: dict[str, History] = {}

    @property
    def anchor(self) -> int:
        """The epoch second where history ends and the live stream starts."""
        if self._anchor is None:
            self._anchor = math.floor(_now())
        return self._anchor

    def params(self, spec: SymbolSpec) -> _market.Params:
        c = self.config
        vol = spec.volatility if c.volatility is None else c.volatility
        sigma = spec.sigma * vol / spec.volatility
        jump_std = 0.01 * vol if c.jump_size is None else c.jump_size
        return _market.Params(
            tick=spec.tick,
            price_decimals=spec.price_decimals,
            lot=spec.lot,
            size_decimals=spec.size_decimals,
            spread_ticks=spec.spread_ticks,
            sigma=sigma,
            jump_prob=-math.expm1(-c.jump_intensity / 3600.0),
            jump_std=jump_std,
            event_rate=c.tick_rate / _market.TICKS_PER_EVENT,
            trade_lots=spec.trade_size / spec.lot,
            book_lots=spec.book_size / spec.lot,
        )

    def history(self, spec: SymbolSpec) -> History:
        """Return the (cached) history of `spec`'s symbol."""
        hist = self._histories.get(spec.name)
        if hist is None:
            hist = self._histories[spec.name] = History(self.config.seed, self.anchor,
                                                          self.params(spec), spec)
        return hist

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


_current: Market | None = None


def current() -> Market:
    """Return the market in use, configured from the environment on first use."""
    global _current
    if _current is None:
        _current = Market(parse({}))
    return _current


def configure(options: dict[str, Any]) -> Market:
    global _current
    _current = Market(parse(options))
    return _current


def reset() -> None:
    global _current
    _current = None
