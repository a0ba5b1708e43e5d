"""`engine ui`: the dashboard of a running engine, paper accounts and saved results."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui", help="open the web dashboard: a running engine, accounts, saved results",
        description="Serve the dashboard: attach to a running `engine run` (the newest by "
                    "default) and browse paper accounts and saved backtest and sweep results "
                    "(`--json` files). Prints the URL with its access token.")
    p.add_argument("results", nargs="*", metavar="RESULT.json",
                   help="saved `engine backtest --json` or `engine sweep --json` files")
    p.add_argument("--attach", metavar="PID|latest|RUNFILE",
                   help="the running engine to watch (default: the newest, if any)")
    p.add_argument("--no-attach", action="store_true", help="only browse, even if engines run")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="[HOST:]PORT",
                   help="where to serve (default 127.0.0.1 and a free port)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow an address other machines reach (the token is still needed)")
    p.set_defaults(func=run)


def run_board(args: argparse.Namespace, publish: bool = True):  # -> engine.ui.RunBoard | None
    """The board of `engine run`: a run publishes its run file and board, so `engine ui` can
    attach to it later; `--ui` also serves the dashboard from a process of its own. Without
    `publish`, only `--ui` makes a board (None otherwise)."""
    from engine.cli._common import UsageError
    from engine.ui import RunBoard, UiAddressError, parse_address

    if args.ui is None:
        if args.allow_remote:
            raise UsageError("--allow-remote goes with --ui")
        return RunBoard(serve=False) if publish else None
    try:
        host, port = parse_address(args.ui)
        return RunBoard(host=host, port=port, allow_remote=args.allow_remote)
    except UiAddressError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from engine.cli._common import UsageError
    from engine.ui import UiAddressError, parse_address, running_engines, serve_ui
    from engine.ui._main import NoRunningEngine

    try:
        host, port = parse_address(args.listen)
    except UiAddressError as exc:
        raise UsageError(str(exc).replace("--ui", "--listen")) from None
    attach = None if args.no_attach else args.attach
    if attach is None and not args.no_attach and running_engines():
        attach = "latest"
    try:
        serve_ui(attach=attach, results=args.results, host=host, port=port,
                 allow_remote=args.allow_remote,
                 ready=lambda url: print(f"dashboard: {url}", flush=True))
    except (UiAddressError, NoRunningEngine, OSError) as exc:
        raise UsageError(str(exc)) from None
    return 0
