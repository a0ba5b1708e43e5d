"""What `engine run` shares with and without --actors: its checks, the paper account's settings
from the command line, the status line and the log set-up."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

__all__ = ["check_run_args", "configure_logging", "paper_args", "status_printer"]


def paper_args(args: argparse.Namespace) -> dict:
    from pydantic import ValidationError

    from engine.clearing.config import BrokerConfig, Fees, RiskLimits, Slippage
    from engine.cli._common import UsageError
    from engine.paths import account_dir

    try:
        account_dir(args.account)
        config = BrokerConfig(fees=Fees(taker_pct=args.fee_pct, maker_pct=args.fee_pct),
                              slippage=Slippage(spread_fraction=args.slippage_spread),
                              latency_ms=args.latency_ms, risk=RiskLimits(leverage=args.leverage))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--{err['loc'][-1]}: {err['msg']}".replace("_", "-")) from None
    except ValueError as exc:
        raise UsageError(f"--account: {exc}") from None
    if args.cash is not None and args.cash <= 0:
        raise UsageError(f"--cash must be positive, got {args.cash:g}")
    from engine.cli._instruments import instruments_from

    return {"name": args.account, "cash": args.cash, "config": config,
            "instruments": instruments_from(args)}


def check_run_args(args: argparse.Namespace) -> None:
    """The checks `engine run` makes with or without --actors."""
    from engine.cli._common import UsageError, check_timeframe

    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration must be positive, got {args.duration:g}")
    if args.history is not None and args.history < 0:
        raise UsageError(f"--history must be 0 or more, got {args.history}")
    check_timeframe(args.timeframe)


def status_printer(args: argparse.Namespace) -> tuple[Any, float, bool]:
    """The status-line callback, its period (s) and whether stderr is a terminal (the line is
    then redrawn in place)."""
    tty = sys.stderr.isatty()

    def show(snapshot: Any) -> None:
        if tty:
            print("\r" + snapshot.line()[:150], end="", file=sys.stderr, flush=True)
        else:
            print(snapshot.line(), file=sys.stderr, flush=True)

    return show, args.status_every or (1.0 if tty else 5.0), tty


_STRATEGY_LINES = "engine: strategy lines to stdout"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(levelname).1s %(name)s: %(message)s")
    # Strategy lines are the user's own output: print them plainly. A command run again in
    # one process (a notebook calling `engine.cli.main`) replaces the handler it added.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    handler.set_name(_STRATEGY_LINES)
    strat = logging.getLogger("strategy")
    for old in [h for h in strat.handlers if h.get_name() == _STRATEGY_LINES]:
        strat.removeHandler(old)
    strat.addHandler(handler)
    strat.propagate = False
