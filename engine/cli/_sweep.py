"""`engine sweep strat.py -p fast=5:50:5 --data ...`: a parameter sweep or walk-forward run.

Output paths and the sweep secret are checked before any work; the command exits 1, naming
them, when any combination failed."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from engine.cli._backtest import add_data_arguments, run_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="backtest every combination of a parameter grid on worker actors",
        description="Backtest strat.py on every combination of the -p grid over a pool of "
        "worker actors (history loaded once into shared memory) and rank the results; with "
        "--walk-forward, optimize on rolling training windows and report the stitched "
        "out-of-sample run.")
    p.add_argument("strategy", help="path to the strategy file")
    p.add_argument("-p", "--param", action="append", metavar="NAME=SPEC", default=[],
                   help="a grid axis: name=start:stop:step (stop included), name=a,b,c or "
                        "name=value (repeatable)")
    add_data_arguments(p)
    p.add_argument("--workers", type=int,
                   help="worker actors on this host (default: one per core; 0: only joined hosts)")
    p.add_argument("--metric", default="sharpe", help="rank by this statistic (default sharpe)")
    p.add_argument("--minimize", action="store_true", help="lower metric values rank first")
    p.add_argument("--top", type=int, default=20, help="rows in the printed table (default 20)")
    p.add_argument("--registry", metavar="HOST:PORT",
                   help="serve a tractor registry here so sweep hosts on other machines join "
                        "(python -m engine.actors.sweep_host --registry HOST:PORT), with the "
                        "shared secret (--secret-file or ENGINE_SWEEP_SECRET)")
    p.add_argument("--hosts", type=int, default=0,
                   help="wait for this many joined hosts before starting (with --registry)")
    p.add_argument("--secret-file", metavar="PATH",
                   help="with --registry: the shared secret of the sweep's hosts, in a file of "
                        "mode 0600 (default: the environment variable ENGINE_SWEEP_SECRET)")
    p.add_argument("--secret-env", metavar="NAME",
                   help="with --registry: the environment variable holding the shared secret")
    p.add_argument("--allow-host", action="append", default=[], metavar="ADDR",
                   help="with --registry: a host (address, network or name) allowed to join, "
                        "besides loopback (repeatable)")
    p.add_argument("--walk-forward", metavar="TRAIN:TEST",
                   help="walk-forward windows, bar counts or durations: 2000:500, 365d:90d")
    p.add_argument("--anchored", action="store_true",
                   help="walk-forward training windows all start at the first bar")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write every result as JSON")
    p.add_argument("--csv", dest="csv_out", metavar="OUT",
                   help="write one CSV line per combination (and window)")
    p.add_argument("--report", metavar="OUT.html",
                   help="with --walk-forward: an HTML report of the out-of-sample run")
    p.set_defaults(func=run)


def _check_output(path: str, flag: str) -> None:
    """Refuse, before any work, an output path that cannot be written."""
    from engine.cli._common import UsageError

    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: no folder {str(folder)!r}")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists()
                                                    and not os.access(target, os.W_OK)):
        raise UsageError(f"{flag} {path}: not writable")


def run(args: argparse.Namespace) -> int:
    from engine.actors.sweep import ProgressBar, write_csv
    from engine.actors.sweep_auth import SecretError, load_secret
    from engine.backtests.optimize import optimize, walk_forward
    from engine.backtests.replay import BacktestError
    from engine.cli._common import UsageError

    if not args.param:
        raise UsageError("give the grid with -p, e.g. -p fast=5:50:5 -p slow=20:200:10")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if args.report and not args.walk_forward:
        raise UsageError("--report goes with --walk-forward (a sweep has no single run to plot)")
    for path, flag in ((args.json_out, "--json"), (args.csv_out, "--csv"),
                       (args.report, "--report")):
        if path:
            _check_output(path, flag)
    secret = None
    if args.registry:
        try:
            secret = load_secret(file=args.secret_file, env=args.secret_env)
        except SecretError as exc:
            raise UsageError(str(exc)) from None
        # Hosts joining, refused or dropped are worth seeing on a sweep across machines.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
        sweep_log = logging.getLogger("engine.actors.sweep")
        sweep_log.addHandler(handler)
        sweep_log.setLevel(logging.INFO)
    elif args.secret_file or args.secret_env or args.allow_host:
        raise UsageError("--secret-file, --secret-env and --allow-host go with --registry")
    common = dict(metric=args.metric, minimize=args.minimize, workers=args.workers,
                  registry=args.registry, hosts=args.hosts, progress=ProgressBar(),
                  secret=secret, allow_hosts=args.allow_host, spec=run_spec(args))
    try:
        if args.walk_forward:
            result = walk_forward(args.strategy, None, args.param, args.walk_forward,
                                  anchored=args.anchored, **common)
        else:
            result = optimize(args.strategy, None, args.param, **common)
    except (BacktestError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.walk_forward:
        print(result)
    else:
        print(f"{result.strategy}: {len(result.rows)} combinations, ranked by {result.metric}")
        print(result.table(args.top))
        print(result.speed())
        dsr = result.deflated_sharpe
        if result.best is not None and dsr == dsr:
            print(f"best of {result.n_trials} trials: deflated Sharpe ratio {dsr:.3f} (the "
                  f"probability that its Sharpe ratio beats the best of {result.n_trials} "
                  "unskilled tries)")
    if args.json_out:
        result.to_json(args.json_out)
        print(f"results written to {args.json_out}")
    if args.csv_out:
        write_csv(result.rows, args.csv_out)
        print(f"table written to {args.csv_out}")
    if args.report:
        print(f"report written to {result.plot(args.report)}")
    failed = result.failed
    if failed:
        shown = 20
        print(f"engine sweep: {len(failed)} of {len(result.rows)} combinations failed:",
              file=sys.stderr)
        for line in result.failures(shown):
            print(f"  {line}", file=sys.stderr)
        if len(failed) > shown:
            print(f"  ... and {len(failed) - shown} more (--json keeps every error)",
                  file=sys.stderr)
        return 1
    return 0
