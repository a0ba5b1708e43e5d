"""Each strategy's own share of an account: the position its fills built and its orders still
working, and the names and client order ids that keep strategies on one account apart.

Several strategies may trade one account. Each sizes its orders (`ctx.target`, `ctx.close`)
against its own book, never against the account's total, which is the sum of the books: two
strategies targeting +1 and -1 hold +1 and -1, and the account 0. The book is kept where the
strategy runs, from its own orders (working from the moment they are sent) and the broker
events it is told of, so it never waits on a round trip to a broker in another process, and a
run in one process and an actor run settle the same targets to the same positions. At start a
book is rebuilt from the account: the fills and working orders of earlier runs under the
strategy's name. A strategy's name on an account is its class name, or `Name#2`, `Name#3` for
later instances of one class in a run (`distinct_names`); its client order ids start with a
prefix no earlier order of that name used (`id_prefix`). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from engine.orders import (
    CancelOrder,
    ModifyOrder,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderRejected,
    SubmitOrder,
)

__all__ = ["StrategyBook", "BookRouter", "book_of", "distinct_names", "id_prefix",
           "open_book"]


class StrategyBook:
    """One strategy's position (units, signed) and working orders on an account.

    With `fills_on_submit` (a run without a broker, whose orders are only logged) an order
    counts as filled when sent, as the intent log counts it."""

    def __init__(self, strategy: str, *, fills_on_submit: bool = False) -> None:
        self.strategy = strategy
        self.fills_on_submit = fills_on_submit
        self._positions: dict[str, float] = {}
        # client id -> [symbol, +1 buy / -1 sell, size, remaining]
        self._working: dict[str, list[Any]] = {}

    def position(self, symbol: str) -> float:
        """Units of `symbol` the strategy's fills so far add up to (negative: short)."""
        return self._positions.get(symbol, 0.0)

    def working_position(self, symbol: str) -> float:
        """Signed size still to fill of the strategy's working orders in `symbol`."""
        return sum(side * remaining for sym, side, _, remaining in self._working.values()
                   if sym == symbol)

    def positions(self) -> dict[str, float]:
        """Every symbol the strategy holds, with its position."""
        return {s: q for s, q in self._positions.items() if q != 0.0}

    def submitted(self, order: SubmitOrder) -> None:
        """Count an order the strategy just sent."""
        side = 1.0 if order.side == "buy" else -1.0
        # An order sized as a fraction of equity counts 0 until its first fill sizes it.
        if self.fills_on_submit:
            self._add(order.symbol, side * order.units)
        else:
            self._working[order.client_id] = [order.symbol, side, order.units, order.units]

    def apply(self, events: Iterable[Any]) -> None:
        """Take the broker events of the strategy's orders, in the order they happened."""
        working = self._working
        for event in events:
            kind = type(event)
            if kind is OrderFilled:
                self._add(event.symbol, event.signed_size)
                entry = working.get(event.client_id)
                if entry is not None:
                    if entry[2] == 0.0:
                        entry[2] = event.size + event.remaining
                    if event.remaining > 0.0:
                        entry[3] = event.remaining
                    else:
                        del working[event.client_id]
            elif kind is OrderCancelled or kind is OrderRejected:
                working.pop(event.client_id, None)
            elif kind is OrderModified:
                entry = working.get(event.client_id)
                if entry is not None:
                    filled = entry[2] - entry[3]
                    entry[2], entry[3] = event.size, event.size - filled

    def _add(self, symbol: str, units: float) -> None:
        self._positions[symbol] = self._positions.get(symbol, 0.0) + units

    def snapshot(self) -> dict[str, Any]:
        """The book as plain values (to send to another process)."""
        return {"strategy": self.strategy, "fills_on_submit": self.fills_on_submit,
                "positions": dict(self._positions),
                "working": {cid: list(entry) for cid, entry in self._working.items()}}

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> StrategyBook:
        """The book a `snapshot` describes."""
        book = cls(snapshot["strategy"], fills_on_submit=bool(snapshot["fills_on_submit"]))
        book._positions = {str(s): float(q) for s, q in snapshot["positions"].items()}
        book._working = {str(cid): [str(e[0]), float(e[1]), float(e[2]), float(e[3])]
                         for cid, e in snapshot["working"].items()}
        return book


def book_of(account: Any, strategy: str) -> tuple[StrategyBook, list[str]]:
    """`strategy`'s book rebuilt from a clearing `Account`, and the client ids it used there."""
    book = StrategyBook(strategy)
    ids = []
    for order, filled, working in account.orders_of(strategy):
        ids.append(order.client_id)
        side = 1.0 if order.side == "buy" else -1.0
        if filled:
            book._add(order.symbol, side * filled)
        if working:
            book._working[order.client_id] = [order.symbol, side, filled + working, working]
    return book, ids


def id_prefix(strategy: str, now: float, taken: Iterable[str] = ()) -> str:
    """A client order id prefix for a run of `strategy` starting at `now` (epoch seconds) that
    no id in `taken` starts with: `Name.<seconds>.`, or `Name.<seconds>-2.` and so on when a
    run of that name started in the same second."""
    taken = list(taken)
    base = f"{strategy}.{int(now)}"
    prefix, n = f"{base}.", 1
    while any(cid.startswith(prefix) for cid in taken):
        n += 1
        prefix = f"{base}-{n}."
    return prefix


def distinct_names(names: Sequence[str]) -> list[str]:
    """Names for strategies trading one account: each keeps its own unless an earlier one has
    it, then `Name#2`, `Name#3`... in the order given (keep that order across restarts: the
    account tells its strategies apart by name)."""
    out: list[str] = []
    for name in names:
        unique, n = name, 1
        while unique in out:
            n += 1
            unique = f"{name}#{n}"
        out.append(unique)
    return out


class BookRouter:
    """One strategy's order router over the run's router, which other strategies may share:
    commands pass through; `position` and `working_position` answer from the strategy's own
    book; `orders` are the strategy's own."""

    def __init__(self, router: Any, book: StrategyBook) -> None:
        self.router = router
        self.book = book
        self.orders: list[SubmitOrder] = []

    @property
    def account(self) -> Any:
        """The shared router's account (cash, equity and risk are the account's), or None."""
        return getattr(self.router, "account", None)

    @property
    def refresh_marks(self) -> Callable[[], None] | None:
        return getattr(self.router, "refresh_marks", None)

    @property
    def instrument(self) -> Callable[[str], Any] | None:
        """The shared router's instruments (the account's rules by symbol), or None."""
        return getattr(self.router, "instrument", None)

    @property
    def declare_lots(self) -> Callable[[Any], None] | None:
        return getattr(self.router, "declare_lots", None)

    def submit(self, order: SubmitOrder) -> None:
        self.orders.append(order)
        self.book.submitted(order)  # before the router: it may answer at once
        self.router.submit(order)

    def cancel(self, command: CancelOrder) -> None:
        self.router.cancel(command)

    def modify(self, command: ModifyOrder) -> None:
        self.router.modify(command)

    def position(self, symbol: str) -> float:
        return self.book.position(symbol)

    def working_position(self, symbol: str) -> float:
        return self.book.working_position(symbol)

    def listen(self, deliver: Callable[[list], None]) -> Callable[[list], None]:
        """A broker-event listener that updates the book, then calls `deliver`."""
        apply = self.book.apply

        def listener(events: list) -> None:
            apply(events)
            deliver(events)

        return listener


def open_book(router: Any, strategy: str, now: float) -> tuple[BookRouter, str]:
    """`strategy`'s router over `router` (its book rebuilt from the router's account, if it
    has one), and the client id prefix for its orders from `now` (epoch seconds)."""
    account = getattr(router, "account", None)
    if account is not None:
        book, taken = book_of(account, strategy)
    else:
        book, taken = StrategyBook(strategy, fills_on_submit=not hasattr(router, "attach")), []
    return BookRouter(router, book), id_prefix(strategy, now, taken)
