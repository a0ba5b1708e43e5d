"""`engine data list|import`: what the local history store holds, and files brought into it."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list the stored history, import CSV/Parquet files into it",
                       description="The local Parquet store of bars and recorded ticks "
                       "(<data dir>/history and <data dir>/ticks).")
    cmds = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ls = cmds.add_parser("list", help="stored datasets: symbol, timeframe, first/last time, rows")
    ls.add_argument("--json", action="store_true", help="print JSON")
    imp = cmds.add_parser("import", help="store the bars of a CSV, .csv.gz or Parquet file "
                          "(provider csvfile)")
    imp.add_argument("file")
    imp.add_argument("--symbol", help="dataset name (default: the file name without suffix)")
    imp.add_argument("--timeframe", help="resample to this period (default: the file's own)")
    imp.add_argument("--timezone", default="UTC",
                     help="zone of naive times in the file (IANA name or +HH:MM; default UTC)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.cli._backfill import when
    from engine.cli._common import check_timeframe
    from engine.store import StoreError, import_file, list_datasets, list_tick_datasets

    if args.data_command == "import":
        check_timeframe(args.timeframe)
        try:
            info = import_file(args.file, args.symbol, args.timeframe, args.timezone)
        except StoreError as exc:
            print(f"engine data: error: {exc}", file=sys.stderr)
            return 1
        print(f"{info.provider}/{info.symbol} {info.timeframe_text}: {info.added:+d} bars, "
              f"{info.rows} stored {when(info.first)} .. {when(info.last)}  ({info.path})")
        return 0
    errors: list[StoreError] = []
    infos = list_datasets(errors) + list_tick_datasets(errors)
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
    elif not infos:
        print("nothing stored yet: `engine backfill PROVIDER SYMBOL` or `engine data import FILE`",
              file=sys.stderr)
    else:
        rows = [("provider", "symbol", "timeframe", "first", "last", "rows")]
        rows += [(i.provider, i.symbol, i.timeframe_text, when(i.first), when(i.last),
                  str(i.rows)) for i in infos]
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        for r in rows:
            print("  ".join(cell.rjust(w) if c == 5 else cell.ljust(w)
                            for c, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    for exc in errors:
        print(f"engine data: error: {exc}", file=sys.stderr)
    return 1 if errors else 0
