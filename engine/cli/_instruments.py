"""`--lot`, `--tick` and `--min-notional`: the instruments of a run whose data are files
(backtests, sweeps, paper runs), for every symbol or one at a time."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_instrument_arguments", "instruments_from"]


def add_instrument_arguments(p: argparse.ArgumentParser | Any) -> None:
    """Add the three options to a parser or an argument group."""
    p.add_argument("--lot", action="append", metavar="[SYMBOL=]UNITS", default=[],
                   help="lot size: sizes are multiples of it (an explicit size that is not is "
                        "rejected; computed sizes round down to it); one number for every "
                        "symbol, SYMBOL=UNITS for one (repeatable; default: none, computed "
                        "sizes in whole units)")
    p.add_argument("--tick", action="append", metavar="[SYMBOL=]PRICE", default=[],
                   help="tick size: limit and stop prices are multiples of it (repeatable, as "
                        "--lot; default: none)")
    p.add_argument("--min-notional", action="append", metavar="[SYMBOL=]VALUE", default=[],
                   help="smallest order value, size x price (repeatable, as --lot; default: "
                        "none)")


def instruments_from(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The instruments those options give (UsageError: one line naming the bad value)."""
    from engine.cli._common import UsageError
    from engine.instruments import InstrumentError, parse_instrument_options

    try:
        return parse_instrument_options(lot_size=getattr(args, "lot", None),
                                        tick_size=getattr(args, "tick", None),
                                        min_notional=getattr(args, "min_notional", None))
    except InstrumentError as exc:
        raise UsageError(str(exc)) from None
