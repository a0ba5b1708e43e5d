"""Read-only views of a paper account, rebuilt from its ledger (for `engine account` and notebooks).

Reading never takes the writer's lock and never modifies the ledger.
"""

from __future__ import annotations

from typing import Any

from engine.clearing.account import Account, rebuild
from engine.orders import OrderFilled

__all__ = ["AccountNotFound", "account_report", "load_account"]


class AccountNotFound(LookupError):
    """No ledger exists for the account name."""


def load_account(name: str) -> tuple[Account, list[OrderFilled], str]:
    """Rebuild an account from its ledger; return it, its fills, and the ledger's path."""
    from engine.clearing.ledger import LOG_NAME, LedgerError, read_events
    from engine.paths import account_dir, list_accounts

    directory = account_dir(name)
    if not directory.exists():
        known = ", ".join(list_accounts()) or "none yet"
        raise AccountNotFound(f"no paper account named {name!r} (accounts: {known})")
    account = Account(name, [])
    path = directory / LOG_NAME
    events = [event for _, event in read_events(directory)]
    if rebuild(account, events, path) == 0:
        raise LedgerError(f"{path}: holds no records yet: the account was created but never "
                          f"opened (`engine run --paper --account {name}` opens it)")
    fills = [e for e in events if isinstance(e, OrderFilled)]
    for f in fills:  # positions are valued at their last fill price
        account.mark(f.symbol, f.price)
    return account, fills, str(path)


def account_report(name: str) -> dict[str, Any]:
    """Cash, equity, positions (marked at the last fill price), open orders and fills."""
    account, fills, path = load_account(name)
    return {
        "account": name,
        "ledger": path,
        "starting_cash": account.cash0,
        "cash": account.cash,
        "equity": account.equity(),
        "realized": account.realized,
        "fees": account.fees,
        "positions": [p.__dict__ for p in account.positions_view()],
        "open_orders": [o.__dict__ for o in account.open_orders()],
        "fills": [f.model_dump() for f in fills],
    }
