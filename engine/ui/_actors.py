"""The board of an `engine run --actors` run: the root publishes it, the strategy actors feed it.

The root owns the run file and the board segment (naming the feed daemon's shm segments) and
writes the status rows, as a one-process run does. What only a strategy's own process knows, its
log lines, its declared indicators and whether its callbacks moved to a thread, rides along with
the counters each strategy actor already sends the root on its control stream (`ActorRows`), so
no new stream, socket or segment is needed: the root turns them into board rows (`heard`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from engine.ui._board import RunBoard, _declared
from engine.ui._messages import IndicatorDecl, LogLine, RunStatus, StrategyState

__all__ = ["ActorRows", "heard", "start_actor_board"]

KEEP = 200  # log lines an actor holds between two reports (older ones are dropped)


class ActorRows(logging.Handler):
    """In a strategy actor: its strategy's log lines since the last report."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[dict[str, Any]] = deque(maxlen=KEEP)
        logging.getLogger("strategy").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append({"t": record.created, "level": record.levelname,
                               "strategy": record.name.removeprefix("strategy."),
                               "message": record.getMessage()[:2000]})
        except Exception:  # noqa: BLE001 - a log line must never break the strategy
            self.handleError(record)

    def take(self, runner: Any) -> dict[str, Any]:
        """What goes with the actor's next counters: `{"ui": ...}`."""
        lines = list(self.lines)
        self.lines.clear()
        s = runner.stats
        return {"ui": {"log": lines, "lag": s.lag, "off_loop": s.off_loop,
                       "indicators": [d.model_dump() for d in _declared(runner)]}}

    def close(self) -> None:
        logging.getLogger("strategy").removeHandler(self)
        super().close()


def heard(board: RunBoard | None, event: dict[str, Any]) -> None:
    """The root heard an actor event: a strategy's report's log lines become board rows."""
    if board is None or event.get("event") != "strategy_stats":
        return
    ui = event.get("ui") or {}
    try:
        decls = [IndicatorDecl.model_validate(d) for d in ui.get("indicators", ())]
        lines = [LogLine.model_validate(line) for line in ui.get("log", ())]
    except ValueError:
        return  # not what this engine's actors send: the dashboard goes without it
    board.actors[event["strategy"]] = {**ui, "indicators": decls}
    for line in lines:
        board.push(line)


_STATES = {"running": "running", "failed": "failed", "stopped": "stopped",
           "starting": "starting", "restarting": "restarting"}


def start_actor_board(board: RunBoard | None, root: Any, clock: Any,
                      nursery: trio.Nursery) -> None:
    """Publish the run (the feed daemon's tokens, known once the root watches the feed) and
    write its status rows from `nursery` until it is cancelled."""
    if board is None:
        return
    plan = root.plan
    if root.accounts.get(root.account) is not None:
        board.account = root.account  # a paper account, whose ledger the dashboard reads
    if board.publish(provider=plan.provider, symbols=list(plan.symbols),
                     timeframe=plan.timeframe, tokens=root.feed_info["tokens"],
                     started=clock.now(), logs=False):
        nursery.start_soon(board.rows, _status(board, root, clock))


def _status(board: RunBoard, root: Any, clock: Any) -> Callable[[], RunStatus]:
    last = [int(root.stats.get("quotes", 0)), clock.now()]

    def status() -> RunStatus:
        st, now = root.stats, clock.now()
        quotes = int(st.get("quotes", 0))
        rate = (quotes - last[0]) / max(now - last[1], 1e-9)
        last[:] = quotes, now
        strategies = []
        for slot in root.plan.slots:
            counts, ui = slot.stats(), board.actors.get(slot.name, {})
            state = _STATES.get(slot.state, "running")
            if state == "running" and ui.get("off_loop"):
                state = "in its thread"
            strategies.append(StrategyState(
                name=slot.name, state=state,
                quotes=counts["quotes"], bars=counts["bars"], coalesced=counts["coalesced"],
                error=slot.error, off_loop=ui.get("off_loop"), lag=ui.get("lag", 0.0),
                indicators=ui.get("indicators", [])))
        return RunStatus(t=now, quotes=quotes, ticks=int(st.get("ticks", 0)),
                         bars=int(st.get("bars", 0)), rejected=int(st.get("rejected", 0)),
                         quotes_per_s=rate, strategies=strategies)

    return status
