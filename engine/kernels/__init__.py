"""Signal kernels: numba-jitted indicators that read shared memory in place and update
incrementally, matching TA-Lib where TA-Lib has them.

    from engine import kernels

    fast = kernels.ema(shm.array["close"], 12)      # a whole series at once
    rsi = kernels.RSI(14)
    rsi.run(history["close"])                         # seed from history...
    value = rsi.update(new_close)                     # ...then O(1) per new bar

Each indicator is a class holding its state (`SMA`, `EMA`, `WMA`, `RSI`, `MACD`, `BBands`,
`StdDev`, `ZScore`, `ATR`, `Highest`, `Lowest`, `VWAP`, `RollingVWAP`, `CrossOver`, `Cross`,
`CrossUnder`, in `_indicators`) and a function computing a whole series (`sma`, `ema`, ...,
in `_functions`). The jitted kernels live in the private modules beside them (`_moving`,
`_oscillators`, `_volatility`, `_extrema`, `_vwap`, `_cross`): pure functions of (state,
inputs, outputs) with no I/O, no async code and no globals, shared by backtest, paper and live
alike. `engine.signals` keeps declared series in shared memory, updated as bars close.

Importing this package does not import numba: the names load on first use, so `import engine`
stays fast, and kernels compile (or load from numba's cache) on their first call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "KINDS",
    "Indicator",
    "SMA",
    "EMA",
    "WMA",
    "RSI",
    "MACD",
    "BBands",
    "StdDev",
    "ZScore",
    "ATR",
    "Highest",
    "Lowest",
    "VWAP",
    "RollingVWAP",
    "CrossOver",
    "CrossUnder",
    "Cross",
    "sma",
    "ema",
    "wma",
    "rsi",
    "macd",
    "bbands",
    "stddev",
    "zscore",
    "atr",
    "highest",
    "lowest",
    "vwap",
    "rolling_vwap",
    "crossover",
    "crossunder",
    "cross",
]

if TYPE_CHECKING:
    from engine.kernels._base import Indicator
    from engine.kernels._functions import (
        atr,
        bbands,
        cross,
        crossover,
        crossunder,
        ema,
        highest,
        lowest,
        macd,
        rolling_vwap,
        rsi,
        sma,
        stddev,
        vwap,
        wma,
        zscore,
    )
    from engine.kernels._indicators import (
        ATR,
        EMA,
        KINDS,
        MACD,
        RSI,
        SMA,
        VWAP,
        WMA,
        BBands,
        Cross,
        CrossOver,
        CrossUnder,
        Highest,
        Lowest,
        RollingVWAP,
        StdDev,
        ZScore,
    )


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "Indicator":
        module = "engine.kernels._base"
    elif name[0].islower():
        module = "engine.kernels._functions"
    else:
        module = "engine.kernels._indicators"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
