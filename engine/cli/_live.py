"""`engine run --live` and `engine account halt/resume`: the options of a live run, the
confirmation prompt, and the halt file a running live broker watches."""

from __future__ import annotations

import argparse
import sys
from typing import Any

VENUES = ("binance", "kraken")


def add_live_arguments(p: argparse.ArgumentParser) -> None:
    live = p.add_argument_group("live trading (--live): real orders at a real venue")
    live.add_argument("--live", action="store_true",
                      help="trade the account at --venue with real orders (see README, "
                           "Going live)")
    live.add_argument("--venue", choices=VENUES, help="the venue to trade at (and stream from)")
    live.add_argument("--testnet", action="store_true",
                      help="use the venue's test network (Binance spot testnet)")
    live.add_argument("--yes", action="store_true",
                      help="start without asking (needed when stdin is not a terminal)")
    live.add_argument("--keys", metavar="FILE",
                      help="API keys file (TOML, mode 0600); default ENGINE_<VENUE>_KEYS_FILE "
                           "or ENGINE_<VENUE>_API_KEY / _API_SECRET")
    live.add_argument("--max-order-notional", type=float, metavar="QUOTE",
                      help="refuse an order worth more than this (quote currency)")
    live.add_argument("--max-position", type=float, metavar="UNITS",
                      help="refuse an order that would take a position past this (base units)")
    live.add_argument("--max-open-orders", type=int, metavar="N",
                      help="refuse a new order while N orders are working")
    live.add_argument("--max-daily-loss", type=float, metavar="QUOTE",
                      help="halt when equity falls this much below the day's start (UTC)")
    live.add_argument("--max-drawdown", type=float, metavar="FRACTION",
                      help="halt when equity falls this fraction below its peak (0.1: 10%%)")
    live.add_argument("--flatten-on-halt", action="store_true",
                      help="on halt, also close every position at market")
    live.add_argument("--unknown-orders", choices=("report", "adopt", "cancel"),
                      default="report",
                      help="venue orders the ledger does not know: report (default), adopt "
                           "them into the account, or cancel them")


def live_settings(args: argparse.Namespace) -> tuple[str, dict[str, Any], Any]:
    """Check the live options; return the provider, its options and the LiveSettings."""
    from pydantic import ValidationError

    from engine.clearing.venue_broker import LiveLimits
    from engine.cli._common import UsageError, parse_options
    from engine.live_trading import LiveSettings
    from engine.paths import account_dir

    if args.paper:
        raise UsageError("--live and --paper exclude each other")
    if not args.venue:
        raise UsageError("--live needs --venue binance or --venue kraken")
    if args.account == "paper":
        raise UsageError("--live needs --account NAME (a live account of its own, not 'paper')")
    try:
        account_dir(args.account)
    except ValueError as exc:
        raise UsageError(f"--account: {exc}") from None
    provider = f"providers.{args.venue}"
    if args.provider not in ("providers.sim", provider, args.venue):
        raise UsageError(f"--live streams from the venue it trades at; drop --provider "
                         f"{args.provider}")
    options = parse_options(args.provider_option)
    if args.testnet:
        import importlib

        testnet = getattr(importlib.import_module(provider), "TESTNET", None)
        if testnet is None:
            raise UsageError(f"{args.venue} has no spot test network; trade small on the "
                             f"real venue, or use --paper")
        options = {**testnet, **options}
    try:
        limits = LiveLimits(max_order_notional=args.max_order_notional,
                            max_position=args.max_position, max_open_orders=args.max_open_orders,
                            max_daily_loss=args.max_daily_loss, max_drawdown=args.max_drawdown,
                            flatten_on_halt=args.flatten_on_halt,
                            unknown_orders=args.unknown_orders)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--{str(err['loc'][-1]).replace('_', '-')}: {err['msg']}") from None
    return provider, options, LiveSettings(account=args.account, limits=limits,
                                           keys_file=args.keys,
                                           confirm=None if args.yes else _confirm)


def _confirm(text: str) -> bool:
    print(text, file=sys.stderr)
    if not sys.stdin.isatty():
        print("engine run: --live asks for confirmation; stdin is not a terminal (pass --yes)",
              file=sys.stderr)
        return False
    answer = input("Send real orders? Type 'yes' to start: ")
    return answer.strip().lower() == "yes"


def halt(name: str, resume: bool = False) -> int:
    """`engine account halt NAME` / `resume NAME`: write or remove the account's HALT file.

    A running live broker checks it every second: on halt it cancels every working order and
    refuses new ones; the next live run of the account starts halted until resumed.
    """
    from engine.clearing.venue_broker import HALT_FILE
    from engine.cli._common import UsageError
    from engine.paths import account_dir

    try:
        directory = account_dir(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not directory.is_dir():
        raise UsageError(f"no account {name!r}")
    marker = directory / HALT_FILE
    if resume:
        if marker.exists():
            marker.unlink()
            print(f"account {name}: resumed (new orders are accepted again)")
        else:
            print(f"account {name}: was not halted")
        return 0
    marker.write_text("engine account halt\n")
    print(f"account {name}: halted; a running live engine cancels its working orders within a "
          f"second and refuses new ones until `engine account resume {name}`")
    return 0
