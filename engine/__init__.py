"""engine: an algorithmic strategy engine. One strat.py runs live, in paper trading and in backtests.

Users import what they need from here: `from engine import Strategy, kernels`. Names load on
first use, so a process that only attaches to shared memory does not pay for numba and trio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CancelOrder": "engine.orders",
    "Clock": "engine.clock",
    "Context": "engine.strategy",
    "Feed": "engine.feed",
    "FeedError": "engine.feed",
    "LiveClock": "engine.clock",
    "Provider": "engine.provider",
    "ProviderError": "engine.provider",
    "Quote": "engine.quotes",
    "QuoteError": "engine.quotes",
    "ReplayClock": "engine.clock",
    "RunResult": "engine.live",
    "ShmArray": "engine.shm",
    "ShmError": "engine.shm",
    "ShmToken": "engine.shm",
    "SignalError": "engine.signals",
    "SignalSet": "engine.signals",
    "open_signals": "engine.signals",
    "PaperBroker": "engine.clearing.broker",
    "open_account": "engine.clearing.broker",
    "BrokerConfig": "engine.clearing.config",
    "Fees": "engine.clearing.config",
    "Slippage": "engine.clearing.config",
    "RiskLimits": "engine.clearing.config",
    "Strategy": "engine.strategy",
    "StrategyError": "engine.strategy",
    "SubmitOrder": "engine.orders",
    "Tick": "engine.quotes",
    "current_clock": "engine.clock",
    "list_indicators": "engine.kernels.catalog",
    "Instrument": "engine.instruments",
    "InstrumentError": "engine.instruments",
    "RunSpec": "engine.run_spec",
    "RunSpecError": "engine.run_spec",
    "load_provider": "engine.provider",
    "load_strategy": "engine.strategy",
    "open_feed": "engine.feed",
    "run": "engine.live",
    "run_live": "engine.live",
    "backtest": ("engine.backtests.replay", "run_backtest"),
    "BacktestResult": "engine.backtests.replay",
    "BacktestError": "engine.backtests.replay",
    "optimize": "engine.backtests.optimize",
    "walk_forward": "engine.backtests.optimize",
    "SweepResult": "engine.backtests.optimize",
    "WalkForwardResult": "engine.backtests.optimize",
    "open_ui": "engine.ui",
    "serve_ui": "engine.ui",
}
_SUBMODULES = {"kernels", "signals"}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        where = _EXPORTS[name]
        module, attr = where if isinstance(where, tuple) else (where, name)
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"engine.{name}")
    else:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from engine import kernels, signals  # noqa: F401
    from engine.backtests.optimize import (  # noqa: F401
        SweepResult,
        WalkForwardResult,
        optimize,
        walk_forward,
    )
    from engine.backtests.replay import BacktestError, BacktestResult  # noqa: F401
    from engine.backtests.replay import run_backtest as backtest  # noqa: F401
    from engine.clearing.broker import PaperBroker, open_account  # noqa: F401
    from engine.clearing.config import BrokerConfig, Fees, RiskLimits, Slippage  # noqa: F401
    from engine.clock import Clock, LiveClock, ReplayClock, current_clock  # noqa: F401
    from engine.feed import Feed, FeedError, open_feed  # noqa: F401
    from engine.live import RunResult, run, run_live  # noqa: F401
    from engine.orders import CancelOrder, SubmitOrder  # noqa: F401
    from engine.provider import Provider, ProviderError, load_provider  # noqa: F401
    from engine.quotes import Quote, QuoteError, Tick  # noqa: F401
    from engine.shm import ShmArray, ShmError, ShmToken  # noqa: F401
    from engine.signals import SignalError, SignalSet, open_signals  # noqa: F401
    from engine.strategy import Context, Strategy, StrategyError, load_strategy  # noqa: F401
    from engine.ui import open_ui, serve_ui  # noqa: F401
