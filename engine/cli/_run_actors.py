"""`engine run --actors a.py b.py`: the command-line face of `engine.actors.root.run`.

Parses nothing itself (the `engine run` parser does); checks the actor options, shows the status
line, prints the summary and turns expected errors into one line (`UsageError`).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["run_command"]


def run_command(args: argparse.Namespace) -> int:
    """Run `args.strategy` (one or more files) as actors; return the exit status."""
    from engine.cli._common import UsageError, parse_options
    from engine.cli._run_common import (
        check_run_args,
        configure_logging,
        paper_args,
        status_printer,
    )
    from engine.cli._ui import run_board
    from engine.provider import ProviderError
    from engine.strategy import StrategyError

    check_run_args(args)
    if getattr(args, "record", False):
        raise UsageError("--record is not available with --actors yet")
    # Only with --ui: a kill -9 of the terminal's process group takes the root's resource
    # tracker with it, and the root's board segment would stay until the next engine starts
    # (the actors, in sessions of their own, clean up after themselves).
    board = run_board(args, publish=False)
    from engine.actors._runtime import parse_hostport

    try:
        registry = parse_hostport(args.registry)
    except ValueError as exc:
        raise UsageError(f"--registry: {exc}") from None
    configure_logging(args.log_level)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    paper = paper_args(args) if args.paper else None
    show, every, tty = status_printer(args)

    from engine.actors.daemon import FeedGone
    from engine.actors.root import ClearingError, run

    try:
        result = run(args.strategy, provider=args.provider, symbols=symbols,
                     timeframe=args.timeframe, duration=args.duration,
                     params=parse_options(args.param, "-p"),
                     provider_options=parse_options(args.provider_option),
                     history=args.history, status=show, status_every=every,
                     handle_signals=True, paper=paper, restart=args.restart,
                     registry=registry, log_level=args.log_level,
                     lanes=not args.no_lanes, pin_cpus=not args.no_pin, board=board)
    except (StrategyError, ProviderError, ClearingError, FeedGone) as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        from engine.feed import FeedError

        if isinstance(exc, FeedError):
            raise UsageError(str(exc)) from None
        raise
    finally:
        if board is not None:
            board.close()
    if tty:
        print(file=sys.stderr)
    print(result.summary(), flush=True)
    for error in result.errors:
        print(f"engine run: strategy error: {error}", file=sys.stderr)
    return 0 if result.ok else 1
