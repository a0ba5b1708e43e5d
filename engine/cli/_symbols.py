"""`engine symbols PROVIDER [PATTERN]`: list or search a provider's instruments."""

from __future__ import annotations

import argparse
import json
import sys

# Columns of the table: (heading, symbol-info key).
_COLUMNS = [("symbol", "symbol"), ("base", "base"), ("quote", "quote"),
            ("tick", "tick_size"), ("lot", "lot_size"), ("min size", "min_size"),
            ("min notional", "min_notional"), ("status", "status")]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "symbols",
        help="list or search a provider's symbols, with tick and lot sizes",
        description="List the provider's instruments matching PATTERN (a substring, or a glob "
        "with * and ?), with tick size, lot size and minimum order from its symbol info.",
    )
    p.add_argument("provider", help="provider module path or short name (binance, kraken, sim)")
    p.add_argument("pattern", nargs="?", default="", help="substring or glob (default: all)")
    p.add_argument("-o", "--option", action="append", metavar="NAME=VALUE", default=[],
                   help="provider option passed to its configure() (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="show at most this many")
    p.add_argument("--json", action="store_true", help="print the symbol info as JSON")
    p.set_defaults(func=run)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.10f}".rstrip("0").rstrip(".") if value < 1 else f"{value:g}"
    return str(value)


def run(args: argparse.Namespace) -> int:
    from engine.cli._common import UsageError, parse_options
    from engine.provider import ProviderError
    from engine.symbols import SymbolLookupError, list_symbols

    if args.limit is not None and args.limit <= 0:
        raise UsageError(f"--limit must be positive, got {args.limit}")
    try:
        infos = list_symbols(args.provider, args.pattern, options=parse_options(args.option),
                             limit=args.limit)
    except ProviderError as exc:
        raise UsageError(str(exc)) from None
    except SymbolLookupError as exc:
        print(f"engine symbols: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return 0
    if not infos:
        print(f"no symbols match {args.pattern!r}", file=sys.stderr)
        return 1
    for info in infos:
        info.setdefault("quote", info.get("currency"))  # providers without base/quote fields
    rows = [[_cell(info.get(key)) for _, key in _COLUMNS] for info in infos]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, (h, _) in enumerate(_COLUMNS)]
    print("  ".join(h.ljust(w) for (h, _), w in zip(_COLUMNS, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0
