"""engine: an algorithmic strategy engine. One strat.py runs live, in paper trading and in backtests.

Users import what they need from here: `from engine import Strategy, kernels`.
"""

from engine.clock import Clock, LiveClock, ReplayClock, current_clock
from engine.feed import Feed, FeedError, open_feed
from engine.live import RunResult, run, run_live
from engine.orders import CancelOrder, SubmitOrder
from engine.provider import Provider, ProviderError, load_provider
from engine.quotes import Quote, QuoteError, Tick
from engine.shm import ShmArray, ShmError, ShmToken
from engine.strategy import Context, Strategy, StrategyError, load_strategy

__all__ = [
    "CancelOrder", "Clock", "Context", "Feed", "FeedError", "LiveClock", "Provider",
    "ProviderError", "Quote", "QuoteError", "ReplayClock", "RunResult", "ShmArray", "ShmError",
    "ShmToken", "Strategy", "StrategyError", "SubmitOrder", "Tick", "current_clock",
    "load_provider", "load_strategy", "open_feed", "run", "run_live",
]
