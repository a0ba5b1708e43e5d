"""The dashboard's messages across process boundaries: the run file, the board's rows, and what a
page may send over its websocket. Frozen pydantic models that reject unknown fields and carry
their type in a literal `type`, so a row decodes without guessing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from engine.shm import ShmToken

__all__ = ["BoardRow", "FeedEvent", "IndicatorDecl", "LogLine", "RunInfo", "RunStatus",
           "StrategyState", "WatchChart", "board_rows"]


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeedTokens(_Message):
    ticks: ShmToken
    bars: dict[str, ShmToken]


class RunInfo(_Message):
    """A run file (`$ENGINE_HOME/runs/<pid>.json`): where a run's memory is, for its dashboard."""

    type: Literal["run"] = "run"
    pid: int
    started: float  # epoch seconds
    provider: str
    symbols: list[str]
    timeframe: int  # seconds
    tokens: FeedTokens
    board: ShmToken
    account: str | None = None  # the paper account's name, whose ledger the dashboard reads


class IndicatorDecl(_Message):
    """An indicator a strategy declared over a symbol's bars: a kernel kind, the bar fields it
    reads, its parameters and the names of its outputs."""

    symbol: str
    kind: str
    fields: list[str]
    params: list[bool | int | float]
    outputs: list[str]


class StrategyState(_Message):
    name: str
    state: Literal["starting", "running", "in its thread", "stopped", "failed", "restarting"]
    quotes: int
    bars: int
    coalesced: int  # quotes dropped for newer ones while it was behind
    error: str | None = None
    off_loop: str | None = None  # why its callbacks moved to a thread of their own
    lag: float = 0.0  # seconds
    indicators: list[IndicatorDecl] = Field(default_factory=list)


class RunStatus(_Message):
    """A moment of the run: feed counters and health, and each strategy's state."""

    type: Literal["status"] = "status"
    t: float  # epoch seconds
    quotes: int
    ticks: int
    bars: int
    rejected: int
    last_error: str | None = None
    quotes_per_s: float
    status: dict[str, str] = Field(default_factory=dict)  # symbol -> provider's feed_status
    reconnects: int = 0
    gaps: int = 0
    strategies: list[StrategyState] = Field(default_factory=list)


class LogLine(_Message):
    type: Literal["log"] = "log"
    t: float  # epoch seconds
    level: str
    strategy: str
    message: str


class FeedEvent(_Message):
    """A provider's feed status change (disconnected, stale, reconnected, gap_filled)."""

    type: Literal["event"] = "event"
    t: float
    status: str
    symbols: list[str]
    reason: str = ""


BoardRow = Annotated[RunStatus | LogLine | FeedEvent, Field(discriminator="type")]
board_rows: TypeAdapter[RunStatus | LogLine | FeedEvent] = TypeAdapter(BoardRow)


class WatchChart(_Message):
    """From the page: show `symbol`'s candles at `tf` seconds (None: the run's timeframe)."""

    type: Literal["watch"] = "watch"
    symbol: str
    tf: int | None = Field(default=None, gt=0)
