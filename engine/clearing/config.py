"""Paper-broker settings: fees, slippage, latency, stop triggers, partial fills and risk limits.

Typed models a user builds in Python or from `-o`-style strings; they hold no state and do no I/O.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.clearing import _core

__all__ = ["Fees", "Slippage", "RiskLimits", "BrokerConfig"]


class Fees(BaseModel):
    """Per fill: `per_unit` currency per unit traded, plus a percent of notional (maker or
    taker, as fractions: 0.001 is 10 bps), plus `fixed` currency once per order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_unit: float = Field(default=0.0, ge=0)
    maker_pct: float = Field(default=0.0, ge=-0.01, le=0.1)
    taker_pct: float = Field(default=0.0, ge=0, le=0.1)
    fixed: float = Field(default=0.0, ge=0)


class Slippage(BaseModel):
    """Adverse price added to market and stop-market fills: `ticks` times the symbol's tick
    size, plus `spread_fraction` of the quoted spread (0.5: fill half a spread worse), plus
    `fraction` of the price (0.0005: 5 bps worse)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ticks: float = Field(default=0.0, ge=0)
    spread_fraction: float = Field(default=0.0, ge=0)
    fraction: float = Field(default=0.0, ge=0, le=0.1)


class RiskLimits(BaseModel):
    """Checks every order passes before it reaches the book; None switches a check off.
    Sizes in units, notionals in account currency.

    `leverage` caps gross exposure (sum of |position x price| over symbols) at leverage x
    equity, counted after the fill: an order is checked when placed (at the reference price,
    with the taker fee) and again at each fill (at the fill price, with its fee). A fill that no
    longer fits cancels the order with the reason; with `shrink_to_fit` it fills the size that
    fits (a fraction of a unit if need be) and the rest is cancelled. An order that does not
    grow its position's size (a reduction, or a reversal to at most the same size) always fits.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_size: float | None = Field(default=None, gt=0)
    max_position: float | None = Field(default=None, gt=0)
    max_notional: float | None = Field(default=None, gt=0)
    leverage: float | None = Field(default=1.0, gt=0)
    shrink_to_fit: bool = False
    allow_short: bool = True


class BrokerConfig(BaseModel):
    """How the paper broker fills: see each part. `latency_ms` delays an order's arrival at
    the book by that many milliseconds of the engine clock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fees: Fees = Fees()
    slippage: Slippage = Slippage()
    risk: RiskLimits = RiskLimits()
    latency_ms: float = Field(default=0.0, ge=0)
    stop_trigger: Literal["trade", "mid", "bidask"] = "trade"
    partial_fills: bool = True

    def vector(self) -> np.ndarray:
        """The config as the float array the matching kernel reads."""
        cfg = np.zeros(_core.N_CONFIG)
        cfg[_core.C_FEE_PER_UNIT] = self.fees.per_unit
        cfg[_core.C_FEE_MAKER_PCT] = self.fees.maker_pct
        cfg[_core.C_FEE_TAKER_PCT] = self.fees.taker_pct
        cfg[_core.C_FEE_FIXED] = self.fees.fixed
        cfg[_core.C_SLIP_TICKS] = self.slippage.ticks
        cfg[_core.C_SLIP_SPREAD] = self.slippage.spread_fraction
        cfg[_core.C_SLIP_PCT] = self.slippage.fraction
        cfg[_core.C_STOP_MODE] = {"trade": _core.STOP_ON_TRADE, "mid": _core.STOP_ON_MID,
                                  "bidask": _core.STOP_ON_BIDASK}[self.stop_trigger]
        cfg[_core.C_PARTIAL] = 1.0 if self.partial_fills else 0.0
        cfg[_core.C_LEVERAGE] = self.risk.leverage or 0.0
        cfg[_core.C_SHRINK] = 1.0 if self.risk.shrink_to_fit else 0.0
        return cfg
