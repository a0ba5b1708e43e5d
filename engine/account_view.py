"""The account as a strategy sees it through its Context: cash, equity, buying power, holdings,
working orders, and orders sized from them (a value, a fraction of equity, target weights).

Read-only views of the broker's account plus sizing arithmetic; orders still go through the
Context's own order entry, so every check the broker makes applies. Never touches the ledger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AccountAccess", "Holding", "NoAccountError"]


class NoAccountError(RuntimeError):
    """The run has no account to read (orders are logged as intents): use --paper or a
    backtest."""


@dataclass(frozen=True)
class Holding:
    """One symbol's position: `size` in units (signed, negative short), `avg_price` its average
    entry price, `mark` the price it is valued at (the latest close or mid), `value` size x mark
    and `unrealized_pnl` size x (mark - avg_price), both in account currency."""

    symbol: str
    size: float
    avg_price: float
    mark: float
    value: float
    unrealized_pnl: float


class AccountAccess:
    """Account reads and sizing for `Context` (which provides `router`, `symbols`, `ohlcv`,
    `quote`, `target` and `lot_size`)."""

    router: Any
    symbols: list[str]

    # -- reading -------------------------------------------------------------------------------

    def _account(self) -> Any:
        account = getattr(self.router, "account", None)
        if account is None or not hasattr(account, "equity"):
            raise NoAccountError("this run has no account to read: orders are only logged as "
                                 "intents (run with --paper, or backtest)")
        refresh = getattr(self.router, "refresh_marks", None)
        if refresh is not None:
            refresh()  # a replay brings marks up to date only when asked
        return account

    @property
    def cash(self) -> float:
        """Cash in account currency (negative when borrowing)."""
        return self._account().cash

    @property
    def equity(self) -> float:
        """Cash plus every position valued at its latest price, in account currency."""
        return self._account().equity()

    @property
    def leverage(self) -> float | None:
        """The account's cap on gross exposure as a multiple of equity (None: no cap)."""
        return self._account().config.risk.leverage

    @property
    def buying_power(self) -> float:
        """Gross exposure that may still be added under the leverage cap, in account currency
        (leverage x equity - gross exposure, at least 0; infinite without a cap)."""
        account = self._account()
        cap = account.config.risk.leverage
        if cap is None:
            return math.inf
        equity, exposure = account.equity(), account.gross_exposure()
        return max(0.0, cap * equity - exposure)

    def holding(self, symbol: str) -> Holding:
        """The position in `symbol` (size 0 when flat)."""
        account = self._account()
        for p in account.positions_view():
            if p.symbol == symbol:
                return Holding(symbol, p.quantity, p.avg_price, p.mark, p.quantity * p.mark,
                               p.unrealized)
        mark = account.last_mark(symbol)
        return Holding(symbol, 0.0, math.nan, mark, 0.0, 0.0)

    def orders(self, symbol: str | None = None) -> list[Any]:
        """Working orders (all, or `symbol`'s), oldest first: client id, symbol, side, type,
        size, `remaining` (unfilled units), limit and stop prices, time in force, and whether a
        stop has `triggered`."""
        return [o for o in self._account().open_orders() if symbol is None or o.symbol == symbol]

    # -- sizing --------------------------------------------------------------------------------

    def _price(self, symbol: str) -> float:
        """The price an order is sized at when placed: the latest close, else the latest
        quote's mid (or last trade)."""
        bars = self.ohlcv(symbol)  # type: ignore[attr-defined]
        if len(bars):
            return float(bars["close"][-1])
        q = self.quote(symbol) or {}  # type: ignore[attr-defined]
        bid, ask = q.get("bid"), q.get("ask")
        if bid and ask and bid > 0 and ask > 0:
            return (bid + ask) / 2.0
        last = q.get("last")
        if last and last > 0:
            return float(last)
        raise ValueError(f"no price known for {symbol!r} yet: size orders once a bar closed")

    def _have(self, symbol: str) -> float:
        """The position in `symbol` plus what its working orders will add (signed units)."""
        working = getattr(self.router, "working_position", None)
        return self.router.position(symbol) + (working(symbol) if working is not None else 0.0)

    def _units(self, symbol: str, value: float, have: float) -> float:
        """The position (units) that moves `have` toward `value` (currency) of `symbol` at its
        latest price by whole lots and never past it: the order, not the target, is truncated
        toward zero (backtrader's order_target_value), so a position within a lot of its
        target is left alone instead of sold a lot short and bought back."""
        if value == 0.0:
            return 0.0
        lot = self.lot_size(symbol)  # type: ignore[attr-defined]
        price = self._price(symbol)
        gap = (value - have * price) / price / lot
        return have + math.trunc(gap + 1e-9 * math.copysign(1.0, gap)) * lot

    def target_value(self, symbol: str, value: float, **kw: Any) -> str | None:
        """One order to the position in `symbol` worth `value` in account currency (negative:
        short), sized at the latest close, counting the orders still working; the order is
        truncated toward zero to whole lots, so the position never passes the target (a value of
        0 closes it). Returns the order's client id, or None when nothing is to do."""
        if symbol not in self.symbols:
            raise ValueError(f"target_value for {symbol!r}, which this run does not trade "
                             f"({self.symbols})")
        if not math.isfinite(value):
            raise ValueError(f"target_value for {symbol!r}: value must be finite, got {value}")
        want = self._units(symbol, value, self._have(symbol))
        return self.target(symbol, want, **kw)  # type: ignore[attr-defined]

    def _check_fraction(self, total: float, what: str) -> None:
        cap = self.leverage
        if cap is not None and total > cap * (1 + 1e-12):
            raise ValueError(f"{what} adds up to {total:g} of equity, beyond the account's "
                             f"leverage of {cap:g}")

    def target_percent(self, symbol: str, fraction: float, **kw: Any) -> str | None:
        """One order to the position in `symbol` worth `fraction` of equity (0.5: half;
        -0.2: short a fifth), as `target_value`. A fraction beyond the account's leverage is
        refused (ValueError) before anything is sent."""
        if not math.isfinite(fraction):
            raise ValueError(f"target_percent for {symbol!r}: fraction must be finite")
        self._check_fraction(abs(fraction), f"target_percent({symbol!r}, {fraction:g})")
        return self.target_value(symbol, fraction * self.equity, **kw)

    def rebalance(self, weights: Mapping[str, float]) -> list[str]:
        """Trade every symbol of the run to its weight of equity in one step (symbols left out
        go flat): orders that shrink a position go first so their cash is there for the ones
        that grow. Unknown symbols, non-finite weights and weights whose absolute sum is beyond
        the leverage are refused (ValueError) before anything is sent. Returns the client ids."""
        unknown = [s for s in weights if s not in self.symbols]
        if unknown:
            raise ValueError(f"rebalance: {', '.join(map(repr, unknown))} not traded by this run "
                             f"({self.symbols})")
        bad = [s for s, w in weights.items() if not math.isfinite(w)]
        if bad:
            raise ValueError(f"rebalance: weight of {bad[0]!r} is not a number")
        self._check_fraction(sum(abs(w) for w in weights.values()), "rebalance weights")
        equity = self.equity
        plan = []
        for s in self.symbols:
            have = self._have(s)
            want = self._units(s, weights.get(s, 0.0) * equity, have)  # 0: flat, no price
            if abs(want - have) > 1e-12 * max(1.0, abs(want)):
                plan.append((abs(want) >= abs(have) and want * have >= 0, s, want))
        ids = []
        for _, s, want in sorted(plan, key=lambda p: p[0]):  # shrinking orders first
            cid = self.target(s, want)  # type: ignore[attr-defined]
            if cid is not None:
                ids.append(cid)
        return ids
