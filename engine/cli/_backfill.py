"""`engine backfill PROVIDER SYMBOL...`: fetch a provider's history into the local store."""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backfill",
        help="fetch a provider's history into the local Parquet store",
        description="Run the provider's backfill_bars for each SYMBOL and merge the bars into "
        "<data dir>/history/PROVIDER/SYMBOL/TIMEFRAME.parquet (no duplicate bars; the file is "
        "replaced atomically, so an interrupted backfill leaves what was stored intact).",
    )
    p.add_argument("provider", help="provider module path or short name (sim, csvfile, binance)")
    p.add_argument("symbols", nargs="+", metavar="SYMBOL", help="symbols to backfill")
    p.add_argument("--timeframe", help="store bars of this period (1m, 1h, 1d; a multiple of the "
                   "provider's); default: the provider's own")
    p.add_argument("--count", type=int, default=10,
                   help="frames of history to fetch per symbol (provider-sized pages, about 1000 "
                   "bars each; default 10)")
    p.add_argument("-o", "--option", action="append", metavar="NAME=VALUE", default=[],
                   help="provider option passed to its configure() (repeatable)")
    p.set_defaults(func=run)


def when(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    from engine.cli._common import UsageError, check_timeframe, parse_options
    from engine.store import StoreError, backfill

    if args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    check_timeframe(args.timeframe)
    try:
        infos = backfill(args.provider, args.symbols, args.timeframe, args.count,
                         parse_options(args.option))
    except StoreError as exc:
        print(f"engine backfill: error: {exc}", file=sys.stderr)
        return 1
    for info in infos:
        print(f"{info.provider}/{info.symbol} {info.timeframe_text}: {info.added:+d} bars, "
              f"{info.rows} stored {when(info.first)} .. {when(info.last)}  ({info.path})")
    return 0
