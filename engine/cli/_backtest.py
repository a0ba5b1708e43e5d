"""`engine backtest strat.py --data ...`: replay history through a strategy and report."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.run_spec import RunSpec


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The history and account options `engine backtest` and `engine sweep` share."""
    p.add_argument("--data", required=True,
                   help="CSV/Parquet file(s) or stored symbol(s), comma-separated")
    p.add_argument("--provider", help="history store provider to read --data symbols from")
    p.add_argument("--from", dest="start", help="first bar time (ISO 8601 or epoch s)")
    p.add_argument("--to", dest="end", help="last bar time (ISO 8601 or epoch s)")
    p.add_argument("--timeframe", help="resample to this bar period (1m, 1h, 1d, ...)")
    p.add_argument("--cash", type=float, default=100_000.0, help="starting cash (default 100000)")
    p.add_argument("--commission", type=float, default=0.0,
                   help="commission per fill as a fraction of notional (0.001 = 0.1%%)")
    p.add_argument("--slippage", type=float, default=0.0,
                   help="slippage on market/stop fills as a fraction of price")
    p.add_argument("--leverage", type=float, help="cap gross exposure at this multiple of equity")
    p.add_argument("--no-short", action="store_true", help="forbid short positions")
    p.add_argument("--fees", metavar="PRESET",
                   help="a venue's published spot fees in place of --commission: binance "
                        "(0.1%% maker and taker), kraken (0.25%% maker, 0.40%% taker), none")
    p.add_argument("--periods-per-year", type=float, metavar="N",
                   help="annualize with N periods a year (default: 252 for exchange calendars, "
                        "365 for markets that trade every day)")
    p.add_argument("--risk-free", type=float, default=0.0, metavar="RATE",
                   help="annual risk-free rate as a fraction for Sharpe and Sortino (0.04 = 4%%)")
    p.add_argument("--close-at-end", action="store_true",
                   help="close positions still open at the end at the last close (counted as "
                   "trades)")
    p.add_argument("--lots", choices=("fifo", "average"), default="fifo",
                   help="how fills make trades: oldest lot closes first (fifo, default) or "
                   "one lot per position at its average cost")
    from engine.cli._instruments import add_instrument_arguments

    add_instrument_arguments(p)


def run_spec(args: argparse.Namespace) -> RunSpec:
    """The run's description from those options, built once for `engine backtest` and
    `engine sweep` (a bad value is one line)."""
    from engine.cli._common import UsageError
    from engine.cli._instruments import instruments_from
    from engine.run_spec import RunSpec, RunSpecError

    instruments = instruments_from(args)
    try:
        return RunSpec.build(
            data=args.data, provider=args.provider, timeframe=args.timeframe, start=args.start,
            end=args.end, cash=args.cash, commission=args.commission, slippage=args.slippage,
            leverage=args.leverage, allow_short=not args.no_short, fees=args.fees,
            periods_per_year=args.periods_per_year, risk_free=args.risk_free,
            close_at_end=args.close_at_end, lots=args.lots,
            instruments=instruments,
            ticks=getattr(args, "ticks", False), log_level=getattr(args, "log_level", "info"))
    except RunSpecError as exc:
        raise UsageError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backtest", help="replay history through a strategy",
                       description="Replay bars through strat.py with the live strategy API and "
                       "the paper broker's clearing core; print statistics.")
    p.add_argument("strategy", help="path to the strategy file")
    add_data_arguments(p)
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", default=[],
                   help="strategy parameter override (repeatable)")
    p.add_argument("--ticks", action="store_true",
                   help="replay recorded ticks (engine run --record) instead of bars")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"],
                   help="the strategy's log lines at or above this level are printed "
                        "(default info)")
    p.add_argument("--log", dest="log_file", metavar="FILE",
                   help="also write the strategy's log lines to FILE")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the results as JSON")
    p.add_argument("--report", metavar="OUT.html", help="write a self-contained HTML report")
    p.set_defaults(func=run)


def _progress():
    state = {"t0": time.perf_counter(), "shown": False}

    def show(done: int, total: int) -> None:
        elapsed = time.perf_counter() - state["t0"]
        # Only runs long enough to wait on get a bar; a finished run clears it.
        if elapsed < 2.0 and not state["shown"]:
            return
        state["shown"] = True
        width = 30
        filled = int(width * done / max(total, 1))
        rate = done / elapsed if elapsed else 0.0
        print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} bars "
              f"{rate:,.0f} bars/s", end="" if done < total else "\n", file=sys.stderr,
              flush=True)

    return show


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before the run, not after it, when an output cannot be written."""
    import os
    from pathlib import Path

    from engine.cli._common import UsageError

    for flag, out in (("--json", args.json_out), ("--report", args.report),
                      ("--log", args.log_file)):
        if not out:
            continue
        folder = Path(out).expanduser().resolve().parent
        if not folder.is_dir():
            raise UsageError(f"{flag} {out}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise UsageError(f"{flag} {out}: folder {folder} is not writable")


def _log_to(args: argparse.Namespace) -> logging.Handler | None:
    """Print the strategy's lines as `engine run` does; copy them to --log FILE."""
    from engine.cli._common import UsageError
    from engine.cli._run_common import configure_logging

    configure_logging(args.log_level)
    if not args.log_file:
        return None
    try:
        handler = logging.FileHandler(args.log_file, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--log {args.log_file}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logging.getLogger("strategy").addHandler(handler)
    return handler


def run(args: argparse.Namespace) -> int:
    from engine.backtests.replay import BacktestError, run_backtest
    from engine.cli._common import UsageError, parse_options

    _check_outputs(args)
    spec = run_spec(args)
    handler = _log_to(args)
    try:
        result = run_backtest(args.strategy, spec=spec, params=parse_options(args.param, "-p"),
                              progress=_progress())
    except BacktestError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # a bad timeframe and the like
        raise UsageError(str(exc)) from None
    finally:
        if handler is not None:
            logging.getLogger("strategy").removeHandler(handler)
            handler.close()
    print(result)
    if args.json_out:
        result.to_json(args.json_out)
        print(f"results written to {args.json_out}")
    if args.report:
        path = result.plot(args.report)
        print(f"report written to {path}")
    return 0
