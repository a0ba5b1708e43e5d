"""One typed description of a run: where its bars come from, what trading costs, the account it
trades, and how its results are measured. Built once at the edge (the CLI or a Python call) and
read by backtests, sweep workers, walk-forward windows and live runs; a new option is a field
here, not a keyword threaded through every signature.

Only the description lives here: no I/O, no defaults read from the environment.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from engine.clearing.config import BrokerConfig, Fees, RiskLimits, Slippage
from engine.instruments import Instrument, instrument_table

__all__ = ["AccountSpec", "CostSpec", "DataSpec", "MeasureSpec", "RunSpec", "RunSpecError",
           "FILLS_IN_MEMORY"]

# A run keeps at most this many fills in memory (64 bytes each: 64 MB) before older ones spill.
FILLS_IN_MEMORY = 1_000_000


class RunSpecError(ValueError):
    """An option of the run is wrong; the message names it, its value and what it takes."""


_FROZEN = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class DataSpec(BaseModel):
    """The bars: `source` (CSV/Parquet paths or stored symbols, comma-separated, arrays,
    DataFrames, a dict of them by symbol, or attached shared memory), the `symbols` to name
    them, the history store's `provider`, a `timeframe` to resample to, `start`/`end` bounds
    and `trade_from` (ISO 8601 or epoch s; bars before it are warm history), and `ticks`
    (replay recorded ticks instead of bars)."""

    model_config = _FROZEN

    source: Any = None
    symbols: tuple[str, ...] | None = None
    provider: str | None = None
    timeframe: int | str | None = None
    start: Any = None
    end: Any = None
    trade_from: Any = None
    ticks: bool = False


class CostSpec(BaseModel):
    """What trading costs: `commission` per fill as a fraction of notional (maker and taker
    alike), or `fees` (a venue preset's name or a `Fees`) in its place, and `slippage` on
    market and stop fills as a fraction of price."""

    model_config = _FROZEN

    commission: float = 0.0
    slippage: float = 0.0
    fees: Fees | None = None

    @field_validator("commission", "slippage")
    @classmethod
    def _fraction(cls, v: float, info: Any) -> float:
        if not 0 <= v < 0.1:
            raise ValueError(f"{info.field_name} is a fraction (0.001 = 0.1 %), got {v:g}")
        return v

    @field_validator("fees", mode="before")
    @classmethod
    def _preset(cls, v: Any) -> Any:
        if isinstance(v, str):
            from engine.clearing.fee_presets import fee_preset

            return fee_preset(v)
        return v

    def broker_fees(self) -> Fees:
        return self.fees or Fees(taker_pct=self.commission, maker_pct=self.commission)

    def describe(self) -> str:
        """The costs in words: "none" when the run pays no fee and no slippage."""
        f = self.broker_fees()
        parts = []
        if f.maker_pct == f.taker_pct and f.taker_pct:
            parts.append(f"commission {f.taker_pct * 100:g}%")
        elif f.maker_pct or f.taker_pct:
            parts.append(f"commission {f.maker_pct * 100:g}% maker / "
                         f"{f.taker_pct * 100:g}% taker")
        if f.per_unit:
            parts.append(f"{f.per_unit:g} per unit")
        if f.fixed:
            parts.append(f"{f.fixed:g} per order")
        if self.slippage:
            parts.append(f"slippage {self.slippage * 100:g}%")
        return ", ".join(parts) if parts else "none"


class AccountSpec(BaseModel):
    """The account: starting `cash`, `leverage` (gross exposure cap as a multiple of equity;
    None: no cap), `allow_short`, `shrink_to_fit` (a fill beyond buying power fills what
    fits instead of cancelling the order), and `instruments`, the trading rules of the
    symbols it trades by symbol (`{"GOOG": {"lot_size": 1, "tick_size": 0.01}}`; "*" for
    every symbol without its own; see engine.instruments)."""

    model_config = _FROZEN

    cash: float = 100_000.0
    leverage: float | None = None
    allow_short: bool = True
    shrink_to_fit: bool = False
    instruments: dict[str, Instrument] = {}

    @field_validator("instruments", mode="before")
    @classmethod
    def _instruments(cls, v: Any) -> Any:
        return instrument_table(v)

    @field_validator("cash")
    @classmethod
    def _cash(cls, v: float) -> float:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"cash must be positive, got {v:g}")
        return v

    @field_validator("leverage")
    @classmethod
    def _leverage(cls, v: float | None) -> float | None:
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"leverage is a positive multiple of equity (1 = no borrowing), "
                             f"got {v:g}")
        return v


class MeasureSpec(BaseModel):
    """How results are measured: `periods_per_year` (None: the data's calendar), the annual
    `risk_free` rate (a fraction), `bootstrap` (the Sharpe ratio's confidence interval),
    `close_at_end` (close open positions at the last bar as counted trades), `lots` (how fills
    make trades: "fifo" or "average"), `log_level` (the strategy's log lines kept) and
    `fills_in_memory` (the most fills a run keeps in memory, in rows of 64 bytes; older ones
    spill to Parquet files in the temporary directory; None: never spill)."""

    model_config = _FROZEN

    periods_per_year: float | None = None
    risk_free: float = 0.0
    bootstrap: bool = True
    close_at_end: bool = False
    lots: str = "fifo"
    log_level: str = "info"
    fills_in_memory: int | None = FILLS_IN_MEMORY

    @field_validator("fills_in_memory", mode="before")
    @classmethod
    def _fills_in_memory(cls, v: Any) -> Any:
        if v is None:
            return v
        try:
            rows = operator.index(v) if not isinstance(v, bool) else 0
        except TypeError:
            rows = 0
        if rows < 1:
            raise ValueError(f"fills_in_memory is the most fills a run keeps in memory, a whole "
                             f"number of rows of at least 1 (None: never spill), got {v!r}")
        return rows

    @field_validator("lots")
    @classmethod
    def _lots(cls, v: str) -> str:
        if v not in ("fifo", "average"):
            raise ValueError(f"lots must be one of fifo, average, got {v!r}")
        return v

    @field_validator("periods_per_year")
    @classmethod
    def _per_year(cls, v: float | None) -> float | None:
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"periods_per_year must be positive, got {v:g}")
        return v

    @field_validator("risk_free")
    @classmethod
    def _rf(cls, v: float) -> float:
        if not -1 < v < 1:
            raise ValueError(f"risk_free is an annual rate as a fraction (0.04 = 4 %), got {v:g}")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError(f"unknown log level {v!r}: use debug, info, warning or error")
        return v.lower()


_PARTS: dict[str, type[BaseModel]] = {"data": DataSpec, "costs": CostSpec,
                                      "account": AccountSpec, "measure": MeasureSpec}
# Flat option name -> the part that holds it (the public keyword arguments).
_WHERE = {name: part for part, model in _PARTS.items() for name in model.model_fields}


class RunSpec(BaseModel):
    """A whole run: `data`, `costs`, `account`, `measure` (see each)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    data: DataSpec = DataSpec()
    costs: CostSpec = CostSpec()
    account: AccountSpec = AccountSpec()
    measure: MeasureSpec = MeasureSpec()

    @classmethod
    def build(cls, **options: Any) -> RunSpec:
        """A description from flat options (`cash=`, `commission=`, `start=`, ...: every field
        of the parts by its name; `data=` is the data's source). RunSpecError names an unknown
        option or a bad value in one line."""
        parts: dict[str, dict[str, Any]] = {p: {} for p in _PARTS}
        for name, value in options.items():
            key = "source" if name == "data" else name
            part = _WHERE.get(key)
            if part is None:
                known = ", ".join(sorted({*_WHERE, "data"} - {"source"}))
                raise RunSpecError(f"unknown run option {name!r} (options: {known})")
            if key == "symbols" and value is not None:
                value = tuple(value)
            parts[part][key] = value
        try:
            return cls(**{p: _PARTS[p](**kw) for p, kw in parts.items()})
        except ValidationError as exc:
            raise RunSpecError(_first_error(exc)) from None
        except ValueError as exc:  # a fee preset's or an instrument's own message
            raise RunSpecError(str(exc)) from None

    def replace(self, **options: Any) -> RunSpec:
        """This description with some flat options changed (a walk-forward window's bounds)."""
        return RunSpec.build(**{**self.flat(), **options})

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name (`data` for the source), as `build` takes them."""
        out: dict[str, Any] = {}
        for part in _PARTS:
            for name, value in dict(getattr(self, part)).items():
                out["data" if name == "source" else name] = value
        return out

    def options(self) -> dict[str, Any]:
        """Every option but the data's source, as plain JSON values: what a sweep sends its
        workers (`build(**options, data=...)` rebuilds the description there)."""
        out = {}
        for part in _PARTS:
            # The source left out before dumping: arrays in memory have no JSON form.
            for name, value in getattr(self, part).model_dump(mode="json",
                                                              exclude={"source"}).items():
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def broker_config(self) -> BrokerConfig:
        """The paper broker's settings for this run (the clearing core backtests share)."""
        a = self.account
        risk = RiskLimits(leverage=a.leverage, allow_short=a.allow_short,
                          shrink_to_fit=a.shrink_to_fit)
        return BrokerConfig(fees=self.costs.broker_fees(),
                            slippage=Slippage(fraction=self.costs.slippage), risk=risk)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    name = ".".join(str(p) for p in err.get("loc", ()))
    return msg if name and name in msg else f"{name}: {msg}" if name else msg
