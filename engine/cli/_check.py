"""`engine check-provider MODULE`: run the provider conformance checker and print its verdict."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-provider",
        help="check a provider module against the provider spec",
        description="Drive a provider module through the provider spec (SPEC.md) and print a "
        "pass/fail line per rule. Exit status 0 only when every rule passes.",
    )
    p.add_argument("module", help="module path (providers.sim), short name (sim) or .py file")
    p.add_argument("--symbols", help="comma-separated symbols to stream (default: the provider's "
                   "first two from search_symbols)")
    p.add_argument("-o", "--option", action="append", metavar="NAME=VALUE", default=[],
                   help="provider option passed to its configure() (repeatable)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds allowed per rule (default 5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.check_provider import run_check_provider
    from engine.cli._common import UsageError, parse_options

    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout}")
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    report = run_check_provider(args.module, symbols, parse_options(args.option),
                                timeout=args.timeout)
    print(report.format())
    return 0 if report.ok else 1
