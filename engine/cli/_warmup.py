"""`engine check-warmup strat.py --data ...`: prove the strategy's indicators are warm."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-warmup", help="prove a strategy's warm-up on history",
                       description="Replay the strategy with N and with 2N bars of history "
                       "before the last bars of the data and compare every indicator it "
                       "declares there; exit 1 naming any that differ (N: the strategy's "
                       "warmup, or the one derived from its indicators).")
    p.add_argument("strategy", help="path to the strategy file")
    p.add_argument("--data", required=True,
                   help="CSV/Parquet file(s) or stored symbol(s), comma-separated")
    p.add_argument("--provider", help="history store provider to read --data symbols from")
    p.add_argument("--timeframe", help="resample to this bar period (1m, 1h, 1d, ...)")
    p.add_argument("--bars", type=int, metavar="N", help="warm-up to check (default: derived)")
    p.add_argument("--window", type=int, metavar="K",
                   help="bars compared at the end (default: N, at least 20)")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", default=[],
                   help="strategy parameter override (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.backtests.replay import BacktestError
    from engine.backtests.warmup_check import check_warmup
    from engine.cli._common import UsageError, check_timeframe, parse_options

    check_timeframe(args.timeframe)
    for flag, v in (("--bars", args.bars), ("--window", args.window)):
        if v is not None and v < 1:
            raise UsageError(f"{flag} must be a positive number of bars, got {v}")
    try:
        report = check_warmup(args.strategy, args.data, params=parse_options(args.param, "-p"),
                              bars=args.bars, window=args.window, provider=args.provider,
                              timeframe=args.timeframe)
    except (BacktestError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(report.table())
    return 0 if report.ok else 1
