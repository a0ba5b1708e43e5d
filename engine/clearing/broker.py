"""The paper broker: risk checks, matching against the live quote stream, and a durable ledger.

`PaperBroker` is the order router of `engine run --paper`. A command from a strategy is checked
against the risk limits, then accepted (and matched at once against the latest quote when the
order has no latency) or rejected with a reason. Every quote batch from the feed is matched
against working orders. Every event is appended to the account's ledger (one fsync per batch)
before any strategy hears of it, so a crash never loses a fill a strategy was told about; on
start, the account is rebuilt from its ledger.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import trio

from engine.clearing import _core
from engine.clearing.account import NO_WHOLE_LOT, SHORT_OF_POWER, Account, rebuild
from engine.clearing.config import BrokerConfig, RiskLimits
from engine.clock import Clock
from engine.instruments import Instrument, instrument_table
from engine.orders import (
    AccountOpened,
    CancelOrder,
    LedgerEvent,
    LinkOrders,
    ModifyOrder,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    SubmitOrder,
)

__all__ = ["PaperBroker", "open_account"]

log = logging.getLogger("engine.clearing")

Deliver = Callable[[list], None]


def _book(quote: dict) -> tuple[float, float, float, float, float]:
    """bid, ask, bid size, ask size and the last trade price of a quote message (NaN if absent)."""
    bid = quote.get("bid", math.nan)
    ask = quote.get("ask", math.nan)
    bsz = asz = trade = math.nan
    for tick in quote.get("ticks", ()):
        t = tick["type"]
        if t == "bid" or t == "bsize":
            bid, bsz = tick["price"], tick.get("size", math.nan)
        elif t == "ask" or t == "asize":
            ask, asz = tick["price"], tick.get("size", math.nan)
        elif t == "trade":
            trade = tick["price"]
    if math.isnan(trade) and not quote.get("ticks") and quote.get("last") is not None:
        trade = quote["last"]
    return (math.nan if bid is None else bid, math.nan if ask is None else ask, bsz, asz, trade)


# How the reasons of orders cancelled at their fill for the account's sake begin: counted with
# the rejected ones.
_REFUSED_AT_FILL = (SHORT_OF_POWER, NO_WHOLE_LOT)

# A configuration whose risk limits are all off, for a short path through `_risk`.
_NO_LIMITS = RiskLimits(leverage=None)


class PaperBroker:
    """A paper account that behaves like a broker: see the module docstring."""

    def __init__(self, account: Account, clock: Clock, ledger: Any | None = None) -> None:
        self.account = account
        self.clock = clock
        self.ledger = ledger
        self.config = account.config
        self._limits_off = self.config.risk == _NO_LIMITS
        self._cfg_leverage = self.config.risk.leverage or 0.0
        self._orders: list[SubmitOrder] = []  # what strategies submitted (accepted or not)
        account.placed = self._orders
        # Orders refused: rejected before the book, or cancelled at a fill for buying power or
        # (sized as a fraction of equity) for want of a whole lot or of the minimum notional.
        self.rejections: list[OrderRejected | OrderCancelled] = []
        self.fills: list[OrderFilled] = []
        self.equity_curve: list[tuple[float, float]] = []
        self._deliver: dict[str | None, Deliver] = {}
        self._pending: list[LedgerEvent] = []
        self._wake: trio.Event | None = None  # set while run() commits in groups
        # Outside run(): with group_commit, events wait for an explicit flush() (one fsync).
        self.group_commit = False
        # Live, an order meets the current quote at once; a replay matches at the next bar.
        self.match_on_submit = True
        # Without a ledger, a run whose strategies ignore acceptances (a replay of a strategy
        # without on_order) skips building OrderAccepted events nobody would read.
        self.announce_accepts = True
        # A replay that marks positions only when an order needs them sets this: it brings the
        # account's marks up to date before an order is checked.
        self.refresh_marks: Callable[[], None] | None = None
        self._books: dict[str, tuple[float, float, float, float, float]] = {}

    @property
    def orders(self) -> list[SubmitOrder]:
        """What strategies submitted this run (accepted or not), in the order they did."""
        if self.account._unbuilt:
            self.account._build()
        return self._orders

    @orders.setter
    def orders(self, orders: list[SubmitOrder]) -> None:
        self._orders = self.account.placed = orders

    # -- wiring --------------------------------------------------------------------------------

    def attach(self, strategy: str | None, deliver: Deliver) -> None:
        """Send events of orders placed by `strategy` to `deliver` (None: every strategy's)."""
        self._deliver[strategy] = deliver

    def _record(self, events: Sequence[LedgerEvent]) -> None:
        if not events:
            return
        self._pending.extend(events)
        if self._wake is not None:
            self._wake.set()
        elif not self.group_commit:
            self.flush()

    def flush(self) -> None:
        """Append pending events to the ledger (one fsync), then tell the strategies."""
        events = self._pending
        if not events:
            return
        self._pending = []
        if self.ledger is not None:
            self.ledger.append(events)  # durable before anyone is told
        for e in events:
            kind = type(e)
            if kind is OrderFilled:
                self.fills.append(e)
            elif kind is OrderRejected or (kind is OrderCancelled
                                           and e.reason.startswith(_REFUSED_AT_FILL)):
                self.rejections.append(e)
        if not self._deliver:
            return
        everyone = self._deliver.get(None)
        if everyone is not None and len(self._deliver) == 1:
            everyone(events)  # one listener for every strategy: no routing needed
            return
        by_strategy: dict[str | None, list] = defaultdict(list)
        for event in events:
            order = self.account.order(getattr(event, "client_id", ""))
            by_strategy[order.strategy if order else None].append(event)
        for strategy, evs in by_strategy.items():
            deliver = self._deliver.get(strategy) or self._deliver.get(None)
            if deliver is not None:
                deliver(evs)

    async def run(self) -> None:
        """Group commit: flush what a scheduler turn produced with one fsync, until cancelled."""
        self._wake = trio.Event()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                self.flush()
        finally:
            self._wake = None
            self.flush()

    # -- OrderRouter ---------------------------------------------------------------------------

    def position(self, symbol: str) -> float:
        return self.account.position(symbol)

    def instrument(self, symbol: str) -> Instrument:
        """`symbol`'s trading rules on this account (engine.instruments)."""
        return self.account.instrument(symbol)

    def declare_lots(self, lots: Mapping[str, float]) -> None:
        """A strategy's `lot_sizes`: the lot of each symbol whose instrument sets none (one set
        by the run, or by a venue, stays; a different one is logged)."""
        declare_lots(self.account, lots)

    def working_position(self, symbol: str) -> float:
        """Signed size still to fill of the working orders in `symbol`."""
        account = self.account
        if not account.unsettled:
            return 0.0
        return account.working_size(symbol, 1) - account.working_size(symbol, -1)

    def submit(self, order: SubmitOrder) -> None:
        now = self.clock.now()
        if self.refresh_marks is not None:
            self.refresh_marks()
        self.orders.append(order)
        reason = self._risk(order)
        if reason:
            event = OrderRejected(time=now, account=self.account.name, client_id=order.client_id,
                                  symbol=order.symbol, reason=reason)
            log.info("order rejected: %s: %s", order.describe(), reason)
            # A rejected order never reaches the book, but its strategy must hear of it.
            self.account.remember(order)
            self._record([event])
            return
        if self.announce_accepts or self.ledger is not None:
            events: list[LedgerEvent] = [self.account.accept(order, now)]
        else:
            self.account.accept_quietly(order, now)
            events = []
        if self.match_on_submit and self.config.latency_ms == 0 and order.symbol in self._books:
            events.extend(self.account.match(order.symbol, now, *self._books[order.symbol]))
        self._record(events)

    def held(self, symbol: str) -> float:
        """The position a target order trades from: the position plus the working orders'
        signed size (what `Context.target` asks the replay's broker for)."""
        return self.account.position(symbol) + self.working_position(symbol)

    def submit_market(self, client_id: str, symbol: str, side: str, size: float,
                      reduce_only: bool, now: float, strategy: str | None) -> bool:
        """`submit(market_order(...))` for a broker set up as a replay sets it (see
        `quick_orders`): a plain market order in units of a symbol with no instrument rule,
        every risk limit off, no quote book, nobody hearing acceptances. It passes the checks
        `submit` would make (none but a known price) and goes on the book without its
        `SubmitOrder` being built. False, with nothing done, for an order this does not
        decide (reduce-only, a ruled symbol, no price yet): `submit` takes those."""
        account = self.account
        if reduce_only or symbol not in account.ruleless:
            return False
        self.refresh_marks()
        sym = account._index[symbol]
        mark = account.marks[sym]
        if mark != mark:
            return False  # no price known yet: rejected by `submit`, with its event
        account.add_market(client_id, sym, symbol, side, size, now, strategy)
        return True

    def quick_orders(self) -> bool:
        """Whether `submit_market` may stand for `submit` here: a replay's broker (marks
        refreshed for each order, no match on submit, no quote book), no ledger, nobody
        hearing acceptances, every risk limit off."""
        return (self.refresh_marks is not None and not self.match_on_submit
                and not self._books and self.ledger is None and not self.announce_accepts
                and self._limits_off)

    def cancel(self, command: CancelOrder) -> None:
        now = self.clock.now()
        if not self.account.working(command.client_id):
            order = self.account.order(command.client_id)
            self._record([OrderRejected(
                time=now, account=self.account.name, client_id=command.client_id,
                symbol=order.symbol if order else "?",
                reason="cancel: no working order with this id")])
            return
        self._record([self.account.cancel(command.client_id, now),
                      *self.account.cancel_children(command.client_id, now)])

    def link(self, command: LinkOrders) -> None:
        """Make two working orders one-cancels-the-other (rejected with the reason if not)."""
        now = self.clock.now()
        try:
            event = self.account.link_oco(*command.client_ids, now)
        except ValueError as exc:
            first = self.account.order(command.client_ids[0])
            self._record([OrderRejected(time=now, account=self.account.name,
                                        client_id=command.client_ids[0],
                                        symbol=first.symbol if first else "?", reason=str(exc))])
            return
        self._record([event])

    def modify(self, command: ModifyOrder) -> None:
        now = self.clock.now()
        if self.refresh_marks is not None:
            self.refresh_marks()
        order = self.account.order(command.client_id)
        if not self.account.working(command.client_id):
            reason = "modify: no working order with this id"
        else:
            try:
                events: list[LedgerEvent] = [self.account.modify(command, now)]
            except ValueError as exc:
                reason = f"modify: {exc}"
            else:
                if (self.match_on_submit and self.config.latency_ms == 0
                        and order.symbol in self._books):
                    events.extend(self.account.match(order.symbol, now, *self._books[order.symbol]))
                self._record(events)
                return
        self._record([OrderRejected(time=now, account=self.account.name,
                                    client_id=command.client_id,
                                    symbol=order.symbol if order else "?", reason=reason)])

    # -- risk ----------------------------------------------------------------------------------

    def _reference_price(self, order: SubmitOrder) -> float:
        book = self._books.get(order.symbol)
        if order.limit_price is not None:
            return order.limit_price
        if book is not None:
            bid, ask, _, _, trade = book
            px = ask if order.side == "buy" else bid
            if not math.isnan(px):
                return px
            if not math.isnan(trade):
                return trade
        if order.stop_price is not None:
            return order.stop_price
        return self.account.last_mark(order.symbol)

    def _protection(self, order: SubmitOrder) -> str | None:
        """A stop-loss or take-profit price on the wrong side of the entry's price."""
        if order.stop_loss is None and order.take_profit is None:
            return None
        ref = self._reference_price(order)
        if math.isnan(ref):
            return f"no price known for {order.symbol} yet"
        buy = order.side == "buy"
        if order.stop_loss is not None and (order.stop_loss >= ref if buy
                                            else order.stop_loss <= ref):
            return (f"stop-loss {order.stop_loss:g} is on the wrong side of the price {ref:g}: "
                    f"a {order.side}'s stop-loss goes {'below' if buy else 'above'} it")
        if order.take_profit is not None and (order.take_profit <= ref if buy
                                              else order.take_profit >= ref):
            return (f"take-profit {order.take_profit:g} is on the wrong side of the price "
                    f"{ref:g}: a {order.side}'s take-profit goes {'above' if buy else 'below'} it")
        return None

    def _takes(self, order: SubmitOrder) -> str | None:
        """Why a post-only order would take liquidity: its limit crosses the best opposite
        price known now (the quote's ask or bid, else the latest mark); None if it rests."""
        if not order.post_only or order.limit_price is None:
            return None
        book = self._books.get(order.symbol)
        buy = order.side == "buy"
        far = (book[1] if buy else book[0]) if book is not None else math.nan
        if math.isnan(far):
            far = self.account.last_mark(order.symbol)
        if math.isnan(far):
            return None
        if (order.limit_price >= far) if buy else (order.limit_price <= far):
            return (f"post-only {order.side} at {order.limit_price:g} would take liquidity: "
                    f"the best {'ask' if buy else 'bid'} is {far:g}")
        return None

    def _rules(self, order: SubmitOrder) -> str | None:
        """Why `order` breaks its instrument's rules (lot, tick, minimum notional) or sizes
        itself beyond the leverage; None if it does not."""
        frac = order.equity_fraction
        if frac is None and order.symbol in self.account.ruleless:
            return None  # units, and no rule to break
        if frac is not None and order.size is None:
            cap = self.config.risk.leverage
            if cap is not None and frac > cap * (1 + 1e-12):
                return (f"sized as {frac * 100:.4g}% of equity, beyond the account's leverage "
                        f"of {cap:g}")
        inst = self.account.instrument(order.symbol)
        if order.size is not None:
            lot = inst.lot_violation(order.size)
            if lot:
                return lot
        for name, px in (("limit", order.limit_price), ("stop", order.stop_price),
                         ("stop-loss", order.stop_loss), ("take-profit", order.take_profit)):
            off = inst.tick_violation(name, px)
            if off:
                return off
        if order.size is not None and inst.min_notional:
            price = self._reference_price(order)
            if math.isnan(price):
                return f"no price known for {order.symbol} yet"
            return inst.notional_violation(order.size, price)
        return None

    def _estimate(self, order: SubmitOrder, price: float) -> float:
        """The size an equity-fraction order would resolve to if it filled now at `price`
        with the taker fee (the fill resolves it again at its own price)."""
        a = self.account
        sym = a.add_symbol(order.symbol)
        fees = self.config.fees
        units, _ = _core.fraction_units(
            a.account, a.positions, a.marks, sym, 1.0 if order.side == "buy" else -1.0, price,
            fees.per_unit + fees.taker_pct * price, fees.fixed, order.equity_fraction,
            self._cfg_leverage, a.lots[sym])
        return float(units)

    def _risk(self, order: SubmitOrder) -> str | None:
        wrong = self._rules(order) or self._protection(order) or self._takes(order)
        if wrong:
            return wrong
        risk = self.config.risk
        if self._limits_off and not order.reduce_only:
            # Every limit is off: only an order nothing can price is refused.
            if math.isnan(self._reference_price(order)):
                return f"no price known for {order.symbol} yet"
            return None
        side = 1 if order.side == "buy" else -1
        pos = self.account.position(order.symbol)
        size = order.size
        if size is None:
            # Sized at its fill: checked at the size it would have now.
            price = self._reference_price(order)
            if math.isnan(price):
                return f"no price known for {order.symbol} yet"
            size = self._estimate(order, price)
        reducing = pos * side < 0 and size <= abs(pos)
        if order.reduce_only and not reducing:
            return (f"reduce-only {order.side} of {size:g} would not reduce the position "
                    f"of {pos:g}")
        if risk.max_order_size is not None and size > risk.max_order_size:
            return f"order size {size:g} is above the limit of {risk.max_order_size:g}"
        if (risk.max_position is not None or not risk.allow_short) and not reducing:
            working = self.account.working_size(order.symbol, side)
            after = pos + side * (size + working)
            if risk.max_position is not None and abs(after) > risk.max_position:
                return (f"position would reach {after:g} {order.symbol}, above the limit of "
                        f"{risk.max_position:g}")
            if not risk.allow_short and after < 0:
                return f"short selling is not allowed: position would reach {after:g}"
        price = self._reference_price(order)
        if math.isnan(price):
            return f"no price known for {order.symbol} yet"
        notional = size * price
        if risk.max_notional is not None and notional > risk.max_notional:
            return f"notional {notional:,.2f} is above the limit of {risk.max_notional:,.2f}"
        if risk.leverage is not None and order.size is not None:
            # (An equity-fraction order is sized to fit when it fills.)
            return self._buying_power(order, side, price, risk.leverage)
        return None

    def _buying_power(self, order: SubmitOrder, side: int, price: float,
                      leverage: float) -> str | None:
        """Why `order` would not fit under the leverage cap if it filled now at `price` with
        the taker fee (the check each fill passes again at its own price): None if it fits."""
        a = self.account
        sym = a.add_symbol(order.symbol)
        fees = self.config.fees
        rate = fees.per_unit + fees.taker_pct * price
        cash, positions = self._after_working(sym)
        room = _core.fill_room(cash, positions, a.marks, sym, float(side), price, rate,
                               fees.fixed, leverage)
        if _core.fits(order.size, room):
            return None
        fee = rate * order.size + fees.fixed
        equity, exposure = _core.after_fill(cash, positions, a.marks, sym,
                                            side * order.size, price, fee)
        return (f"insufficient buying power: exposure after the fill {exposure:,.2f} would "
                f"exceed {leverage:g}x equity of {equity:,.2f}")

    def _after_working(self, sym: int) -> tuple[np.ndarray, np.ndarray]:
        """The account and positions as if the working orders that shrink positions in other
        symbols had filled at their marks: a rebalance places its sells before its buys, and
        the buys may count on them (each fill is checked again at its own price)."""
        a = self.account
        if not a.unsettled:
            return a.account, a.positions
        cash, positions = a.account.copy(), a.positions.copy()
        for s, i in a._index.items():
            q = positions[i, _core.P_QTY]
            mark = a.marks[i] if not math.isnan(a.marks[i]) else positions[i, _core.P_AVG]
            if i == sym or q == 0.0 or math.isnan(mark):
                continue
            shrink = min(abs(q), a.working_size(s, -1 if q > 0 else 1))
            if shrink > 0.0:
                positions[i, _core.P_QTY] = q - math.copysign(shrink, q)
                cash[_core.A_CASH] += math.copysign(shrink, q) * mark
        return cash, positions

    # -- the quote stream ----------------------------------------------------------------------

    def on_batch(self, quotes: list[dict], bars: list[str], events: list) -> None:
        """Feed subscriber: mark positions and match working orders against each quote."""
        if not quotes:
            return
        out: list[LedgerEvent] = []
        account = self.account
        for q in quotes:
            book = _book(q)
            sym = q["symbol"]
            self._books[sym] = book
            bid, ask, _, _, trade = book
            mid = (bid + ask) / 2 if not (math.isnan(bid) or math.isnan(ask)) else trade
            if not math.isnan(mid):
                account.mark(sym, mid)
            if account.n_orders:
                # A trade on a path (a replay's trade inside a bar): the price went through every
                # level since the last one, so stops and limits fill at their own price.
                out.extend(account.match(sym, q.get("time") or self.clock.now(), *book,
                                         touch=q.get("path") is True))
        self._record(out)
        if bars:
            self.equity_curve.append((self.clock.now(), account.equity()))

    def summary(self) -> dict[str, Any]:
        a = self.account
        return {
            "account": a.name, "cash": a.cash, "equity": a.equity(), "fees": a.fees,
            "realized": a.realized,
            "positions": [p.__dict__ for p in a.positions_view()],
            "open_orders": [o.__dict__ for o in a.open_orders()],
        }


def declare_lots(account: Account, lots: Mapping[str, float]) -> None:
    """Give each symbol of `lots` (units per lot) that lot where its instrument sets none."""
    for symbol, lot in lots.items():
        if not (isinstance(lot, int | float) and lot > 0 and math.isfinite(lot)):
            raise ValueError(f"lot size of {symbol!r} must be a positive number, got {lot!r}")
        inst = account.instrument(symbol)
        if inst.lot_size is None:
            account.set_instrument(inst.model_copy(update={"lot_size": float(lot)}))
        elif inst.lot_size != lot:
            log.warning("%s: the strategy's lot size %g is not the instrument's %g; the "
                        "instrument's applies", symbol, lot, inst.lot_size)


def open_account(name: str, symbols: list[str], *, cash: float | None = None,
                 config: BrokerConfig | None = None, path: Path | None = None,
                 clock: Clock, durable: bool = True,
                 instruments: Mapping[str, Any] | None = None) -> PaperBroker:
    """Open (or create with `cash`) a paper account and rebuild it from its ledger.
    `instruments`: the symbols' trading rules (engine.instruments.instrument_table's input);
    they are settings of the run, not of the ledger.

    Raise LedgerError (one line naming the file and what to do) when the ledger cannot be
    used: locked by another process, unreadable, empty, damaged, or not one account's history.
    A torn tail left by a crash is saved to a side file and cut off (see engine.clearing.ledger).
    """
    from engine.clearing.ledger import Ledger
    from engine.paths import account_dir

    account = Account(name, symbols, config=config, instruments=instrument_table(instruments))
    if not durable:
        account.apply(AccountOpened(time=clock.now(), account=name, cash=cash or 0.0))
        return PaperBroker(account, clock)
    directory = path or account_dir(name)
    ledger = Ledger.open(directory)
    try:
        n = rebuild(account, ledger.events(), ledger.path)
        if n == 0:
            opened = AccountOpened(time=clock.now(), account=name,
                                   cash=100_000.0 if cash is None else cash)
            ledger.append([opened])
            account.apply(opened)
        elif cash is not None and cash != account.cash0:
            log.warning("account %s exists (started with %g); --cash %g ignored", name,
                        account.cash0, cash)
    except BaseException:
        ledger.close()
        raise
    return PaperBroker(account, clock, ledger)
