"""`engine run strat.py`: run a strategy live on a provider (default: the simulated market)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a strategy live (default provider: the simulated market)",
        description="Run strat.py live. Without a broker, orders are logged as intents.",
    )
    p.add_argument("strategy", nargs="+",
                   help="path to the strategy file (one Strategy class); several with --actors")
    p.add_argument("--provider", default="providers.sim",
                   help="provider module path or short name (default: providers.sim)")
    p.add_argument("-o", "--provider-option", action="append", metavar="NAME=VALUE", default=[],
                   help="option for the provider's configure() (repeatable), e.g. -o seed=3")
    p.add_argument("--symbols", help="comma-separated symbols (default: the strategy's)")
    p.add_argument("--timeframe", help="bar period: 1s, 5s, 1m, 1h, 1d (default: the strategy's)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", default=[],
                   help="strategy parameter override (repeatable), e.g. -p fast=5")
    p.add_argument("--history", type=int, default=None, metavar="FRAMES",
                   help="frames of the provider's history to backfill per symbol at least "
                        "(default 10); the strategy's warm-up is loaded on top, paging as "
                        "needed; 0: none, the strategy warms up on live bars")
    p.add_argument("--record", action="store_true",
                   help="store every tick in the history store, for tick-level replays")
    paper = p.add_argument_group("paper trading (--paper)")
    paper.add_argument("--paper", action="store_true",
                       help="trade a paper account: orders fill against the live quotes")
    paper.add_argument("--account", default="paper",
                       help="paper account name (default: paper); its ledger lives in the data dir")
    paper.add_argument("--cash", type=float, help="starting cash of a new account (default 100000)")
    paper.add_argument("--fee-pct", type=float, default=0.0,
                       help="fee per fill as a fraction of notional, e.g. 0.001 (default 0)")
    paper.add_argument("--slippage-spread", type=float, default=0.0,
                       help="market-fill slippage as a fraction of the spread (default 0)")
    paper.add_argument("--latency-ms", type=float, default=0.0,
                       help="order latency in milliseconds of the clock (default 0)")
    paper.add_argument("--leverage", type=float, default=1.0,
                       help="buying power as a multiple of equity (default 1)")
    from engine.cli._instruments import add_instrument_arguments

    add_instrument_arguments(paper)
    from engine.cli._live import add_live_arguments

    add_live_arguments(p)
    actors = p.add_argument_group("actors (--actors)")
    actors.add_argument("--actors", action="store_true",
                        help="run each strategy in its own process (tractor actor) on a shared "
                             "feed daemon; several strategy files may be given")
    actors.add_argument("--restart", action="store_true",
                        help="restart a failed strategy actor, with backoff (0.5 s doubling to 30 s)")
    actors.add_argument("--registry", metavar="HOST:PORT",
                        help="tractor registry address (default 127.0.0.1:1616); runs on the same "
                             "registry share a feed daemon")
    actors.add_argument("--no-lanes", action="store_true",
                        help="carry quotes on the tractor streams instead of each actor's "
                             "shared-memory ring and doorbell (higher latency)")
    actors.add_argument("--no-pin", action="store_true",
                        help="let the OS place the actors; by default, with two CPUs or more, the "
                             "feed daemon keeps a CPU of its own and the strategy actors the rest "
                             "(lower tick-to-strategy latency)")
    p.add_argument("--ui", metavar="[HOST:]PORT",
                   help="serve the live dashboard (its URL, with its access token, is printed); "
                        "port 0: a free one; only 127.0.0.1 unless --allow-remote")
    p.add_argument("--allow-remote", action="store_true",
                   help="let --ui listen on an address other machines reach (token still needed)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="log level (default info)")
    p.add_argument("--status-every", type=float, default=None,
                   help="seconds between status lines (default: 1 on a terminal, 5 otherwise)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.cli._common import UsageError, parse_options
    from engine.cli._run_common import (
        check_run_args,
        configure_logging,
        paper_args,
        status_printer,
    )
    from engine.cli._ui import run_board
    from engine.live import resolve_strategy
    from engine.live import run as run_strategy
    from engine.provider import ProviderError
    from engine.strategy import StrategyError

    if args.actors:
        from engine.cli._run_actors import run_command

        return run_command(args)
    if len(args.strategy) > 1:
        raise UsageError(f"{len(args.strategy)} strategy files given: run several strategies "
                         "with --actors, or one file without it")
    if args.restart or args.registry or args.no_lanes or args.no_pin:
        raise UsageError("--restart, --registry, --no-lanes and --no-pin need --actors")
    check_run_args(args)
    configure_logging(args.log_level)
    try:
        strat = resolve_strategy(args.strategy[0], parse_options(args.param, "-p"))
    except StrategyError as exc:
        raise UsageError(str(exc)) from None
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    paper = paper_args(args) if args.paper else None
    provider, options, live = args.provider, parse_options(args.provider_option), None
    if args.live:  # engine/cli/_live.py: venue, keys, limits, confirmation
        from engine.cli._live import live_settings

        provider, options, live = live_settings(args)
    elif args.venue or args.testnet:
        raise UsageError("--venue and --testnet go with --live")
    show, every, tty = status_printer(args)
    board = run_board(args)
    try:
        result = run_strategy(strat, provider=provider, symbols=symbols,
                              timeframe=args.timeframe, duration=args.duration,
                              provider_options=options,
                              history=args.history, status=show, status_every=every,
                              handle_signals=True, paper=paper, record=args.record, live=live,
                              ui=board)
    except (StrategyError, ProviderError) as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        from engine.clearing.ledger import LedgerError
        from engine.clearing.venue_api import TradingError
        from engine.clearing.venue_broker import LiveAccountError
        from engine.feed import FeedError
        from engine.live_trading import LiveAborted
        from engine.provider import ProviderFailure
        from engine.store import StoreError

        # A venue's and its keys' errors are ProviderFailures: the CLI knows no provider.
        if isinstance(exc, LedgerError | FeedError | StoreError | TradingError
                      | LiveAccountError | LiveAborted | ProviderFailure):
            raise UsageError(str(exc)) from None
        raise
    if tty:
        print(file=sys.stderr)
    print(result.summary())
    for error in result.errors:
        print(f"engine run: strategy error: {error}", file=sys.stderr)
    return 0 if result.ok else 1
