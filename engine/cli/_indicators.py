"""`engine indicators`: the indicators a strategy can declare, with their parameters."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("indicators", help="list the indicators ctx.indicator() takes",
                       description="List every indicator kind with its parameters, the bar "
                       "fields it reads and the lines it outputs.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.kernels.catalog import list_indicators

    items = list_indicators()
    if args.json:
        print(json.dumps([{"kind": i.kind, "params": list(i.params), "inputs": list(i.inputs),
                           "outputs": list(i.outputs), "summary": i.summary} for i in items],
                         indent=2))
        return 0
    width = max(len(i.signature()) for i in items)
    for i in items:
        print(f"{i.signature():{width}s}  {', '.join(i.inputs)} -> {', '.join(i.outputs)}")
        print(f"{'':{width}s}  {i.summary}")
    return 0
