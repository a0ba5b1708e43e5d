"""The `engine` command line: thin layers over public functions a notebook can call too.

Every subcommand parses its arguments, calls one public function and turns the expected errors
into one readable line on stderr with a non-zero exit status; it never prints a traceback for bad
input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from engine.cli import (
    _account,
    _backfill,
    _backtest,
    _check,
    _daemon,
    _data,
    _indicators,
    _run,
    _sweep,
    _symbols,
    _ui,
    _warmup,
)
from engine.cli._common import UsageError, check_timeframe, parse_options

__all__ = ["UsageError", "build_parser", "check_timeframe", "main", "parse_options"]

_COMMANDS = [_run, _backtest, _sweep, _check, _warmup, _account, _symbols, _backfill, _data,
             _indicators, _ui, _daemon]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine",
        description="Algorithmic strategy engine: one strat.py runs live, in paper and in backtests.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.add_parser(sub)
    # The daemon runs commands through this entry point: handed over, not imported back.
    sub.choices["daemon"].set_defaults(cli_main=main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        # A command started from the shell runs in a warm child of the daemon when one is up.
        try:
            code = _daemon.forward(sys.argv[1:])
        except KeyboardInterrupt:
            print("engine: interrupted", file=sys.stderr)
            return 130
        if code is not None:
            return code
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        parser.exit(2, f"engine {args.command}: error: {exc}\n")
    except KeyboardInterrupt:
        print(f"engine {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`engine ... | head`): stop quietly, as Unix tools do, and keep
        # the interpreter from failing again while it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        from engine.shm import ShmError  # here: importing it costs `engine --help` numpy

        if not isinstance(exc, ShmError):
            raise
        # Shared memory failed (a segment name taken, /dev/shm missing or full): one line.
        print(f"engine {args.command}: error: shared memory: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
