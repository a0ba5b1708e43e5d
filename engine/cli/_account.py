"""`engine account show|fills|list`: read paper accounts from their ledgers (never writes)."""

from __future__ import annotations

import argparse
import datetime as dt
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("account", help="show paper accounts: cash, positions, orders, fills",
                       description="Read a paper account from its ledger.")
    cmds = p.add_subparsers(dest="account_command", metavar="ACTION", required=True)
    show = cmds.add_parser("show", help="cash, positions, equity, open orders and last fills")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--last", type=int, default=10, help="how many recent fills (default 10)")
    fills = cmds.add_parser("fills", help="every fill of the account")
    fills.add_argument("name")
    fills.add_argument("--json", action="store_true", help="print JSON")
    cmds.add_parser("list", help="the accounts in the data directory")
    for verb, text in (("halt", "live account: cancel every working order, refuse new ones"),
                       ("resume", "live account: accept new orders again after a halt")):
        cmds.add_parser(verb, help=text).add_argument("name")
    p.set_defaults(func=run)


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def run(args: argparse.Namespace) -> int:
    from engine.clearing.ledger import LedgerError
    from engine.clearing.report import AccountNotFound, account_report
    from engine.cli._common import UsageError
    from engine.paths import list_accounts

    if args.account_command in ("halt", "resume"):
        from engine.cli._live import halt

        return halt(args.name, resume=args.account_command == "resume")
    if args.account_command == "list":
        try:
            names = list_accounts()
        except OSError as exc:
            raise UsageError(f"{exc.filename}: {exc.strerror}; check its owner and mode") from None
        for name in names:
            print(name)
        return 0
    try:
        report = account_report(args.name)
    except (AccountNotFound, LedgerError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:  # the data directory itself cannot be used
        raise UsageError(f"{exc.filename}: {exc.strerror}; check its owner and mode") from None
    if args.account_command == "fills":
        if args.json:
            print(json.dumps(report["fills"], indent=2))
        else:
            for f in report["fills"]:
                print(f"{_when(f['time'])}  {f['side']:4s} {f['size']:>12g} {f['symbol']:10s} @ "
                      f"{f['price']:<14g} fee {f['fee']:<10.4g} {f['liquidity']:5s} "
                      f"[{f['client_id']}]")
        return 0
    if args.json:
        report = dict(report, fills=report["fills"][-args.last:])
        print(json.dumps(report, indent=2))
        return 0
    print(f"account {report['account']}  (ledger: {report['ledger']})")
    print(f"  equity {report['equity']:,.2f}   cash {report['cash']:,.2f}   started with "
          f"{report['starting_cash']:,.2f}   realized {report['realized']:,.2f}   fees "
          f"{report['fees']:,.2f}")
    print("  positions:" + ("" if report["positions"] else " none"))
    for p in report["positions"]:
        print(f"    {p['symbol']:10s} {p['quantity']:>12g} @ {p['avg_price']:<12g} mark "
              f"{p['mark']:<12g} unrealized {p['unrealized']:,.2f}  realized {p['realized']:,.2f}")
    print("  open orders:" + ("" if report["open_orders"] else " none"))
    for o in report["open_orders"]:
        price = " ".join(x for x in (o["stop_price"] and f"stop {o['stop_price']:g}",
                                     o["limit_price"] and f"limit {o['limit_price']:g}") if x)
        print(f"    {o['client_id']:8s} {o['side']:4s} {o['remaining']:g}/{o['size']:g} "
              f"{o['symbol']} {o['order_type']} {price} {o['tif']}")
    fills = report["fills"][-args.last:]
    print(f"  last fills ({len(fills)} of {len(report['fills'])}):" + ("" if fills else " none"))
    for f in fills:
        print(f"    {_when(f['time'])}  {f['side']:4s} {f['size']:g} {f['symbol']} @ "
              f"{f['price']:g}  fee {f['fee']:.4g}")
    return 0
