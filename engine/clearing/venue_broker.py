"""The live broker: the order router of `engine run --live`, trading one account at a real venue
through a provider's `TradingSession` (engine/clearing/venue_api.py).

It speaks the same router protocol as the paper broker (`submit`, `cancel`, `modify`,
`position`, `attach`, `on_batch`, `run`) and keeps the same fsync'd ledger, whose first record
names the venue. The rules it keeps:

- Nothing leaves before it is checked: halt state, time in force, reduce-only (the engine
  enforces it: spot venues have none), the venue's filters (lot, tick, minimum size and
  notional) and the risk limits (`LiveLimits`). A refused order gets an OrderRejected with the
  reason, and never reaches the venue.
- An order sized as a fraction of equity (`ctx.buy(s, "95%")`) is resolved when placed, since a
  venue takes only sizes: the account's equity (positions at the latest mid) and the latest
  ask (buys) or bid (sells), the venue's published entry-tier taker fee
  (engine.clearing.fee_presets) included, whole lots of the venue's lot size, by the clearing
  core's `fraction_units`. Backtests and paper accounts resolve it at the fill instead: the
  price it fills at may differ from the one it was sized at here. The ledger records both the
  fraction and the size sent.
- An order is in the ledger (OrderAccepted) before its request is sent. Its client order id at
  the venue comes from the ledger: `<tag><n>` for the n-th order of the account (`r<m>` added
  for the m-th replacement of a modify), so a restart knows every id it may have sent. The
  strategy hears OrderAccepted once the venue has acknowledged the order.
- A request whose answer was lost is resolved by querying that client order id, never by
  sending it again; an order the venue has not seen once its request can no longer be valid
  (recvWindow plus a margin) is recorded as rejected.
- Fills and order updates come from the private stream; REST polling takes over while it is
  down. A fill is recorded once, by (client id, venue trade id); duplicate and late events are
  absorbed. Reconciliation runs on start and after every (re)connect: the ledger's working
  orders are looked up, missed fills folded in (logged as fills made while the engine was not
  listening), orders the ledger does not know reported, adopted or cancelled (`LiveLimits.
  unknown_orders`), and the balances compared with the account.
- Halt (a breached daily-loss or drawdown limit, `engine account halt NAME`, or `kill_switch`):
  cancel every working order, optionally flatten, refuse new orders until the account's HALT
  file is removed (`engine account resume NAME`).

Keys never reach this module: it holds a session object whose requests sign themselves.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field

from engine.clearing import _core
from engine.clearing.account import NO_WHOLE_LOT, Account
from engine.clearing.fee_presets import fee_preset
from engine.clearing.venue_api import (
    AnswerLost,
    Execution,
    OrderSpec,
    StreamHooks,
    TradingError,
    VenueFill,
    VenueOrder,
    VenueRejected,
)
from engine.clock import Clock
from engine.instruments import Instrument
from engine.orders import (
    AccountOpened,
    CancelOrder,
    LedgerEvent,
    ModifyOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderRejected,
    SubmitOrder,
)

__all__ = ["LiveLimits", "VenueBroker", "open_live_account", "HALT_FILE", "LiveAccountError"]

log = logging.getLogger("engine.live_broker")

HALT_FILE = "HALT"
ADOPTED = "adopted:"  # client id prefix of a venue order the ledger adopted
# Relative tolerance when checking a size or price against a step (float noise, not slack).
_STEP_TOL = 1e-9


class LiveAccountError(RuntimeError):
    """A live account cannot be opened as asked (wrong venue, mixed quote currencies)."""


class LiveLimits(BaseModel):
    """Risk limits of a live account, checked before any request leaves; None turns one off.
    Notionals and losses in the quote currency, positions in base units, `max_drawdown` a
    fraction of the highest equity seen this run (0.1: 10 %)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_notional: float | None = Field(default=None, gt=0)
    max_position: float | None = Field(default=None, gt=0)
    max_open_orders: int | None = Field(default=None, gt=0)
    max_daily_loss: float | None = Field(default=None, gt=0)
    max_drawdown: float | None = Field(default=None, gt=0, lt=1)
    flatten_on_halt: bool = False
    unknown_orders: Literal["report", "adopt", "cancel"] = "report"
    poll_every: float = Field(default=2.0, gt=0)  # REST polling period while the stream is down

    def describe(self) -> str:
        parts = []
        for name in ("max_order_notional", "max_position", "max_open_orders", "max_daily_loss",
                     "max_drawdown"):
            value = getattr(self, name)
            parts.append(f"{name.replace('_', '-')} {'off' if value is None else f'{value:g}'}")
        parts.append(f"flatten on halt {'yes' if self.flatten_on_halt else 'no'}")
        parts.append(f"unknown orders: {self.unknown_orders}")
        return ", ".join(parts)


def _tag(account: str) -> str:
    # Short (Kraken's cl_ord_id takes 18 characters) and distinct per account name.
    return "e" + hashlib.blake2b(account.encode(), digest_size=3).hexdigest() + "-"


def _off_step(value: float, step: float) -> bool:
    if step <= 0:
        return False
    n = value / step
    return abs(n - round(n)) > _STEP_TOL * max(1.0, abs(n))


class VenueBroker:
    """A live account at one venue: see the module docstring."""

    def __init__(self, account: Account, ledger: Any, session: Any, clock: Clock,
                 limits: LiveLimits | None = None, directory: Path | None = None) -> None:
        self.account = account
        self.ledger = ledger
        self.session = session
        self.venue = session.venue
        self.clock = clock
        self.limits = limits or LiveLimits()
        self.directory = directory
        self.orders: list[SubmitOrder] = []
        self.fills: list[OrderFilled] = []
        self.rejections: list[OrderRejected] = []
        self.halted: str | None = None
        self.stream_up = False
        self.reconciled = 0  # reconciliations done (tests and status)
        self.report: list[str] = []  # what reconciliation found, one line each
        self._deliver: dict[str | None, Callable[[list], None]] = {}
        self._tag = _tag(account.name)
        self._venue_ids: dict[str, list[str]] = {}  # client id -> every venue id it had
        self._by_venue: dict[str, str] = {}  # venue id -> client id
        self._seen: set[tuple[str, int]] = set()  # (client id, venue trade id) recorded
        self._accepted = 0
        self._announced: set[str] = set()  # client ids whose OrderAccepted the strategy heard
        self._send, self._recv = trio.open_memory_channel[tuple](math.inf)
        self._books: dict[str, tuple[float, float]] = {}
        self._peak = -math.inf
        self._day: tuple[int, float] | None = None  # (UTC day, equity at its start)
        self._last_event_time = 0.0
        self._changed = trio.Event()
        self._queued = 0
        self._idle = trio.Event()
        self._need_fills: set[str] = set()  # symbols whose fills the stream left incomplete
        if directory is not None and (directory / HALT_FILE).exists():
            self.halted = (directory / HALT_FILE).read_text().strip() or "halted"

    # -- ledger and delivery -------------------------------------------------------------------

    def replay(self, event: LedgerEvent) -> None:
        """Apply one ledger event at start-up (the account is rebuilt exactly as it was)."""
        self.account.apply(event)
        self._index(event)

    def _index(self, event: LedgerEvent) -> None:
        self._last_event_time = max(self._last_event_time, event.time)
        if isinstance(event, OrderAccepted):
            cid = event.order.client_id
            if cid.startswith(ADOPTED):
                self._map(cid, cid.removeprefix(ADOPTED))  # the venue's own id, not numbered
            else:
                self._accepted += 1
                self._map(cid, f"{self._tag}{self._accepted}")
        elif isinstance(event, OrderModified):
            ids = self._venue_ids.get(event.client_id, [])
            base = ids[0] if ids else event.client_id
            self._map(event.client_id, f"{base}r{len(ids)}")
        elif isinstance(event, OrderFilled):
            self._seen.add((event.client_id, event.fill_id))

    def _map(self, client_id: str, venue_id: str) -> None:
        self._venue_ids.setdefault(client_id, []).append(venue_id)
        self._by_venue[venue_id] = client_id

    def venue_id(self, client_id: str) -> str:
        """The client order id the venue knows `client_id`'s order by now."""
        return self._venue_ids[client_id][-1]

    def _commit(self, events: Sequence[LedgerEvent], tell: Sequence[LedgerEvent] | None = None
                ) -> None:
        """Append `events` (one fsync), apply them, then tell the strategies `tell` (default:
        all of them)."""
        if not events:
            return
        self.ledger.append(events)
        for e in events:
            self.account.apply(e)
            self._index(e)
            if isinstance(e, OrderFilled):
                self.fills.append(e)
            elif isinstance(e, OrderRejected):
                self.rejections.append(e)
        self._tell(list(events if tell is None else tell))
        self._bump()

    def _bump(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until `condition()` holds, re-checking after each ledger change (seconds of
        trio's clock; raise trio.TooSlowError past `timeout`)."""
        with trio.fail_after(timeout):
            while not condition():
                await self._changed.wait()

    def _tell(self, events: list) -> None:
        if not events or not self._deliver:
            return
        by: dict[str | None, list] = defaultdict(list)
        for e in events:
            order = self.account.order(getattr(e, "client_id", ""))
            by[order.strategy if order else None].append(e)
        for strategy, evs in by.items():
            deliver = self._deliver.get(strategy) or self._deliver.get(None)
            if deliver is not None:
                deliver(evs)

    def attach(self, strategy: str | None, deliver: Callable[[list], None]) -> None:
        """Send events of orders placed by `strategy` to `deliver` (None: every strategy's)."""
        self._deliver[strategy] = deliver

    # -- the router protocol -------------------------------------------------------------------

    def position(self, symbol: str) -> float:
        return self.account.position(symbol)

    def working_position(self, symbol: str) -> float:
        return self.account.working_size(symbol, 1) - self.account.working_size(symbol, -1)

    def _reject(self, order: SubmitOrder, reason: str) -> None:
        log.info("order refused before sending: %s: %s", order.describe(), reason)
        self.account.remember(order)
        event = OrderRejected(time=self.clock.now(), account=self.account.name,
                              client_id=order.client_id, symbol=order.symbol, reason=reason)
        self._commit([event])

    def instrument(self, symbol: str) -> Instrument:
        """`symbol`'s trading rules, as the venue publishes them."""
        rules = self.session.rules(symbol)
        return Instrument(symbol=symbol, lot_size=rules.lot_size or None,
                          tick_size=rules.tick_size or None, min_notional=rules.min_notional)

    def _sized(self, order: SubmitOrder) -> SubmitOrder | str:
        """An equity-fraction order with its size (see the module docstring), or why not."""
        frac = order.equity_fraction
        cap = self.account.config.risk.leverage or 1.0
        if frac is not None and frac > cap * (1 + _STEP_TOL):
            return f"sized as {frac * 100:.4g}% of equity, beyond the account's leverage of {cap:g}"
        price = self._price(order)
        if math.isnan(price):
            return f"no price known for {order.symbol} yet"
        a = self.account
        sym = a.add_symbol(order.symbol)
        try:
            fees = fee_preset(self.venue)
        except ValueError:
            fees = a.config.fees
        lot = self.session.rules(order.symbol).lot_size
        units, available = _core.fraction_units(
            a.account, a.positions, a.marks, sym, 1.0 if order.side == "buy" else -1.0, price,
            fees.per_unit + fees.taker_pct * price, fees.fixed, frac, cap, lot)
        if units <= 0:
            return (f"{NO_WHOLE_LOT} ({frac * 100:.4g}% of {available:,.2f} available): less "
                    f"than one lot of {lot:g} {order.symbol} at {price:g} with its fee")
        return order.model_copy(update={"size": float(units)})

    def submit(self, order: SubmitOrder) -> None:
        self.orders.append(order)
        if order.size is None:
            resolved = self._sized(order)
            if isinstance(resolved, str):
                self._reject(order, resolved)
                return
            order = resolved
        reason = self.check(order)
        if reason:
            self._reject(order, reason)
            return
        accepted = OrderAccepted(time=self.clock.now(), account=self.account.name, order=order)
        self._commit([accepted], tell=[])  # durable before the request leaves
        self._queue("place", order.client_id, accepted)

    def cancel(self, command: CancelOrder) -> None:
        if not self.account.working(command.client_id):
            order = self.account.order(command.client_id)
            self._commit([OrderRejected(
                time=self.clock.now(), account=self.account.name, client_id=command.client_id,
                symbol=order.symbol if order else "?",
                reason="cancel: no working order with this id")])
            return
        self._queue("cancel", command.client_id, None)

    def modify(self, command: ModifyOrder) -> None:
        order = self.account.order(command.client_id)
        reason = None
        if order is None or not self.account.working(command.client_id):
            reason = "modify: no working order with this id"
        elif self.halted:
            reason = f"account halted ({self.halted})"
        else:
            new = order.model_copy(update={
                k: v for k, v in (("size", command.size), ("limit_price", command.limit_price),
                                  ("stop_price", command.stop_price)) if v is not None})
            reason = self._filters(new)
        if reason:
            self._commit([OrderRejected(time=self.clock.now(), account=self.account.name,
                                        client_id=command.client_id,
                                        symbol=order.symbol if order else "?", reason=reason)])
            return
        self._queue("modify", command.client_id, command)

    # -- checks before a request leaves --------------------------------------------------------

    def _price(self, order: SubmitOrder) -> float:
        if order.limit_price is not None:
            return order.limit_price
        bid, ask = self._books.get(order.symbol, (math.nan, math.nan))
        px = ask if order.side == "buy" else bid
        if not math.isnan(px):
            return px
        if order.stop_price is not None:
            return order.stop_price
        return self.account.last_mark(order.symbol)

    def _filters(self, order: SubmitOrder) -> str | None:
        rules = self.session.rules(order.symbol)
        if _off_step(order.size, rules.lot_size):
            return (f"size {order.size:g} is not a multiple of {order.symbol}'s lot size "
                    f"{rules.lot_size:g}")
        if order.size < rules.min_size * (1 - _STEP_TOL):
            return f"size {order.size:g} is below {order.symbol}'s minimum of {rules.min_size:g}"
        for name, px in (("limit", order.limit_price), ("stop", order.stop_price)):
            if px is not None and _off_step(px, rules.tick_size):
                return (f"{name} price {px:g} is not a multiple of {order.symbol}'s tick size "
                        f"{rules.tick_size:g}")
        price = self._price(order)
        if math.isnan(price):
            return f"no price known for {order.symbol} yet"
        if rules.min_notional and order.size * price < rules.min_notional * (1 - _STEP_TOL):
            return (f"notional {order.size * price:,.2f} is below {order.symbol}'s minimum of "
                    f"{rules.min_notional:g} {rules.quote}")
        return None

    def check(self, order: SubmitOrder) -> str | None:
        """Why `order` may not be sent, or None: halt, time in force, reduce-only, the
        venue's filters and the risk limits, in that order."""
        if self.halted:
            return (f"account halted ({self.halted}); `engine account resume "
                    f"{self.account.name}` to trade again")
        tifs = getattr(self.session, "time_in_force", ("GTC", "IOC", "FOK"))
        if order.tif not in tifs:
            return f"{self.venue} has no {order.tif} time in force (it takes {', '.join(tifs)})"
        side = 1 if order.side == "buy" else -1
        pos = self.account.position(order.symbol)
        reducing = pos * side < 0 and order.size <= abs(pos) + 1e-12
        if order.reduce_only and not reducing:
            return (f"reduce-only {order.side} of {order.size:g} would not reduce the position "
                    f"of {pos:g}")
        reason = self._filters(order)
        if reason:
            return reason
        lim = self.limits
        notional = order.size * self._price(order)
        if lim.max_order_notional is not None and notional > lim.max_order_notional:
            return (f"notional {notional:,.2f} is above the limit of "
                    f"{lim.max_order_notional:,.2f}")
        if lim.max_position is not None and not reducing:
            after = pos + side * (order.size + self.account.working_size(order.symbol, side))
            if abs(after) > lim.max_position * (1 + _STEP_TOL):
                return (f"position would reach {after:g} {order.symbol}, above the limit of "
                        f"{lim.max_position:g}")
        if lim.max_open_orders is not None and \
                len(self.account.open_orders()) >= lim.max_open_orders:
            return f"{lim.max_open_orders} orders are working already (the limit)"
        return None

    # -- the quote stream: marks, loss limits --------------------------------------------------

    def on_batch(self, quotes: list[dict], bars: list[str], events: list) -> None:
        """Feed subscriber: mark positions to the mid and watch the loss limits."""
        for q in quotes:
            bid, ask = q.get("bid"), q.get("ask")
            for tick in q.get("ticks", ()):
                if tick["type"] in ("bid", "bsize"):
                    bid = tick["price"]
                elif tick["type"] in ("ask", "asize"):
                    ask = tick["price"]
            bid = math.nan if bid is None else float(bid)
            ask = math.nan if ask is None else float(ask)
            self._books[q["symbol"]] = (bid, ask)
            mid = (bid + ask) / 2 if not (math.isnan(bid) or math.isnan(ask)) else \
                float(q.get("last") or math.nan)
            if not math.isnan(mid):
                self.account.mark(q["symbol"], mid)
        if quotes:
            self._watch_losses()

    def _watch_losses(self) -> None:
        lim = self.limits
        if self.halted or (lim.max_daily_loss is None and lim.max_drawdown is None):
            return
        equity = self.account.equity()
        if math.isnan(equity):
            return
        now = self.clock.now()
        day = int(now // 86400)
        if self._day is None or self._day[0] != day:
            self._day = (day, equity)
        self._peak = max(self._peak, equity)
        if lim.max_daily_loss is not None and self._day[1] - equity > lim.max_daily_loss:
            self.halt(f"daily loss {self._day[1] - equity:,.2f} above the limit of "
                      f"{lim.max_daily_loss:,.2f}")
        elif lim.max_drawdown is not None and equity < self._peak * (1 - lim.max_drawdown):
            self.halt(f"drawdown {1 - equity / self._peak:.1%} above the limit of "
                      f"{lim.max_drawdown:.1%}")

    # -- halt ----------------------------------------------------------------------------------

    def halt(self, reason: str) -> None:
        """Refuse new orders, cancel every working one (and flatten, if configured); the halt
        lasts, across restarts, until the account's HALT file is removed."""
        if self.halted is None:
            log.warning("account %s halted: %s; cancelling every working order",
                        self.account.name, reason)
            self.halted = reason
            if self.directory is not None:
                (self.directory / HALT_FILE).write_text(reason + "\n")
        self._queue("cancel_all", "", None)

    async def kill_switch(self, reason: str = "kill switch") -> None:
        """Halt and wait (up to 10 s) until every working order is cancelled at the venue."""
        self.halt(reason)
        with trio.move_on_after(10):
            await self._cancel_all()

    async def _cancel_all(self) -> None:
        for view in self.account.open_orders():
            await self._do_cancel(view.client_id, "halt")
        symbols = list(self.account.symbols)
        try:
            stray = await self.session.open_orders(symbols)
        except TradingError as exc:
            log.warning("%s: could not list open orders to cancel: %s", self.venue, exc)
            return
        for vo in stray:
            if vo.venue_id.startswith(self._tag) and vo.venue_id not in self._by_venue:
                try:
                    await self.session.cancel(vo.venue_id, vo.symbol)
                except TradingError as exc:
                    log.warning("%s: cancel of %s failed: %s", self.venue, vo.venue_id, exc)
        if self.limits.flatten_on_halt:
            for p in self.account.positions_view():
                if p.quantity:
                    order = SubmitOrder(client_id=f"flatten.{int(self.clock.now())}.{p.symbol}",
                                        symbol=p.symbol, side="sell" if p.quantity > 0 else "buy",
                                        size=abs(p.quantity), time=self.clock.now())
                    accepted = OrderAccepted(time=self.clock.now(), account=self.account.name,
                                             order=order)
                    self._commit([accepted], tell=[])
                    await self._place(order.client_id, accepted)

    # -- the worker: requests, one at a time, in the order the strategy made them --------------

    async def run(self) -> None:
        """Reconcile, then send requests and follow the private stream until cancelled."""
        async with trio.open_nursery() as nursery:
            await self.reconcile()
            nursery.start_soon(self._stream_loop)
            nursery.start_soon(self._poll_loop)
            nursery.start_soon(self._halt_watch)
            if self.halted:
                self._queue("cancel_all", "", None)
            async for kind, client_id, payload in self._recv:
                try:
                    if kind == "place":
                        await self._place(client_id, payload)
                    elif kind == "cancel":
                        await self._do_cancel(client_id, "cancelled")
                    elif kind == "modify":
                        await self._modify(client_id, payload)
                    elif kind == "cancel_all":
                        await self._cancel_all()
                except TradingError as exc:
                    log.warning("%s: %s of %s failed: %s", self.venue, kind, client_id, exc)
                finally:
                    self._queued -= 1
                    if not self._queued:
                        self._idle.set()

    async def drain(self) -> None:
        """Wait until every queued request has been handled (tests, clean shutdown)."""
        while self._queued:
            await self._idle.wait()

    def _queue(self, kind: str, client_id: str, payload: Any) -> None:
        self._queued += 1
        self._idle = trio.Event()
        self._send.send_nowait((kind, client_id, payload))

    def _spec(self, order: SubmitOrder, venue_id: str) -> OrderSpec:
        return OrderSpec(venue_id=venue_id, symbol=order.symbol, side=order.side,
                         size=order.size, order_type=order.order_type,
                         limit_price=order.limit_price, stop_price=order.stop_price,
                         tif=order.tif, post_only=order.post_only)

    async def _place(self, client_id: str, accepted: OrderAccepted | None,
                     order: SubmitOrder | None = None) -> None:
        order = order or self.account.order(client_id)
        assert order is not None
        venue_id = self.venue_id(client_id)
        sent_at = self.clock.now()
        try:
            answer: VenueOrder | None = await self.session.place(self._spec(order, venue_id))
        except VenueRejected as exc:
            self._venue_refused(client_id, exc.reason)
            return
        except AnswerLost as exc:
            log.warning("%s: the answer to order %s was lost (%s); asking the venue by its id",
                        self.venue, venue_id, exc)
            answer = await self._resolve(client_id, venue_id, order.symbol, sent_at)
            if answer is None:
                self._venue_refused(client_id, "the venue never received it (its answer was "
                                    "lost and the venue does not know the order)")
                return
        except TradingError as exc:
            self._venue_refused(client_id, f"not sent: {exc}")
            return
        if accepted is not None and client_id not in self._announced:
            self._announced.add(client_id)
            self._tell([accepted])
        self._fold_order(answer)

    async def _resolve(self, client_id: str, venue_id: str, symbol: str, sent_at: float
                       ) -> VenueOrder | None:
        """Find out what became of an order whose answer was lost; None: it never arrived."""
        window = getattr(self.session, "recv_window", 5000) / 1000 + 1.0
        delay = 0.25
        while True:
            try:
                found = await self.session.query(venue_id, symbol)
            except TradingError as exc:
                log.info("%s: query of %s failed (%s); asking again", self.venue, venue_id, exc)
                found = None
                if self.clock.now() - sent_at > 3600:
                    raise
            else:
                if found is not None:
                    return found
                if self.clock.now() - sent_at > window:
                    return None  # past its recvWindow: it can no longer be accepted
            await trio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _venue_refused(self, client_id: str, reason: str) -> None:
        order = self.account.order(client_id)
        assert order is not None
        log.info("%s refused %s: %s", self.venue, order.describe(), reason)
        now = self.clock.now()
        rejected = OrderRejected(time=now, account=self.account.name, client_id=client_id,
                                 symbol=order.symbol, reason=f"{self.venue}: {reason}")
        # The ledger holds the acceptance: close the order there, tell only the rejection.
        closed = OrderCancelled(time=now, account=self.account.name, client_id=client_id,
                                symbol=order.symbol, remaining=self._remaining(client_id),
                                reason=f"rejected by {self.venue}")
        self._commit([rejected, closed], tell=[rejected])

    def _remaining(self, client_id: str) -> float:
        row = self.account._row.get(client_id)
        return 0.0 if row is None else float(self.account.orders[row]["remaining"])

    async def _do_cancel(self, client_id: str, reason: str) -> None:
        if not self.account.working(client_id):
            return
        order = self.account.order(client_id)
        assert order is not None
        try:
            final = await self.session.cancel(self.venue_id(client_id), order.symbol)
        except AnswerLost:
            final = None
        if final is None:  # not working at the venue, or the answer was lost: look it up
            final = await self.session.query(self.venue_id(client_id), order.symbol)
        if final is None:
            final = VenueOrder(venue_id=self.venue_id(client_id), symbol=order.symbol,
                               side=order.side, status="cancelled", size=order.size, filled=0,
                               reason="unknown at the venue")
        await self._catch_up_fills(order.symbol, final)
        self._fold_order(final, reason)

    async def _modify(self, client_id: str, command: ModifyOrder) -> None:
        """Cancel-replace: record the new terms (and with them the order's next venue id), cancel
        the working order, then place what is left under the new id."""
        order = self.account.order(client_id)
        if order is None or not self.account.working(client_id):
            return
        row = self.account.orders[self.account._row[client_id]]
        old = self.venue_id(client_id)
        size = command.size if command.size is not None else float(row["size"])
        limit = command.limit_price if command.limit_price is not None else (
            None if math.isnan(row["limit"]) else float(row["limit"]))
        stop = command.stop_price if command.stop_price is not None else (
            None if math.isnan(row["stop"]) else float(row["stop"]))
        if size <= float(row["size"] - row["remaining"]):
            self._commit([OrderRejected(time=self.clock.now(), account=self.account.name,
                                        client_id=client_id, symbol=order.symbol,
                                        reason="modify: new size not above the filled size")])
            return
        modified = OrderModified(time=self.clock.now(), account=self.account.name,
                                 client_id=client_id, size=size, limit_price=limit,
                                 stop_price=stop)
        # In the ledger before the cancel leaves: from here the old id's end is not the order's.
        self._commit([modified], tell=[])
        try:
            final = await self.session.cancel(old, order.symbol)
        except AnswerLost:
            final = None
        if final is None:
            final = await self.session.query(old, order.symbol)
        if final is not None:
            await self._catch_up_fills(order.symbol, final)
        filled = float(row["size"] - row["remaining"])
        if not self.account.working(client_id) or (final is not None and final.status == "filled"):
            rejected = OrderRejected(time=self.clock.now(), account=self.account.name,
                                     client_id=client_id, symbol=order.symbol,
                                     reason="modify: the order filled before it was replaced")
            events: list[LedgerEvent] = [rejected]
            if self.account.working(client_id):
                events.append(OrderCancelled(time=self.clock.now(), account=self.account.name,
                                             client_id=client_id, symbol=order.symbol,
                                             remaining=self._remaining(client_id),
                                             reason="filled before its modification"))
            self._commit(events, tell=[rejected])
            return
        rest = order.model_copy(update={"size": size - filled, "limit_price": limit,
                                        "stop_price": stop})
        try:
            answer = await self.session.place(self._spec(rest, self.venue_id(client_id)))
        except VenueRejected as exc:
            self._venue_refused(client_id, f"replacement refused: {exc.reason}")
            return
        except AnswerLost:
            answer = await self._resolve(client_id, self.venue_id(client_id), order.symbol,
                                         self.clock.now())
            if answer is None:
                self._venue_refused(client_id, "the replacement never reached the venue")
                return
        self._tell([modified])
        self._fold_order(answer)

    # -- what the venue reports ----------------------------------------------------------------

    def _fold_order(self, vo: VenueOrder, reason: str | None = None) -> None:
        """Record that an order is done at the venue (fills are folded separately)."""
        client_id = self._by_venue.get(vo.venue_id)
        if client_id is None or not self.account.working(client_id):
            return
        if vo.venue_id != self.venue_id(client_id):
            return  # the end of a replaced order's earlier incarnation (modify)
        if vo.status in ("cancelled", "expired", "rejected"):
            why = reason or {"cancelled": "cancelled", "expired": f"expired at {self.venue}",
                             "rejected": f"rejected by {self.venue}"}[vo.status]
            if vo.reason:
                why = f"{why}: {vo.reason}"
            order = self.account.order(client_id)
            self._commit([OrderCancelled(time=self.clock.now(), account=self.account.name,
                                         client_id=client_id, symbol=order.symbol,
                                         remaining=self._remaining(client_id), reason=why)])
        elif vo.status == "filled" and self._remaining(client_id) > 0:
            self._need_fills.add(vo.symbol)

    def _fold_fill(self, fill: VenueFill, late: bool = False) -> None:
        client_id = self._by_venue.get(fill.venue_id)
        if client_id is None:
            return
        if (client_id, fill.trade_id) in self._seen:
            return  # a duplicate report of a recorded fill
        remaining = max(0.0, self._remaining(client_id) - fill.size)
        if remaining < 1e-12 * max(1.0, fill.size):
            remaining = 0.0
        if not self.account.working(client_id):
            remaining = 0.0  # a fill reported after the order closed: keep it closed
        if late:
            log.warning("%s: fill of %s (%g %s at %g) happened while the engine was not "
                        "listening; recorded now", self.venue, client_id, fill.size,
                        fill.symbol, fill.price)
            self.report.append(f"missed fill {client_id} {fill.side} {fill.size:g} "
                               f"{fill.symbol} @ {fill.price:g}")
        event = OrderFilled(time=fill.time, account=self.account.name, fill_id=fill.trade_id,
                            client_id=client_id, symbol=fill.symbol, side=fill.side,
                            price=fill.price, size=fill.size, fee=fill.fee,
                            liquidity=fill.liquidity, remaining=remaining)
        self._commit([event])

    def on_execution(self, ex: Execution) -> None:
        """A private-stream event: record its fill and, when the order is done, its end."""
        if ex.venue_id not in self._by_venue:
            log.info("%s: event for order %s, which this account does not know", self.venue,
                     ex.venue_id)
            return
        if ex.fill is not None:
            self._fold_fill(ex.fill)
        if ex.order is not None:
            self._fold_order(ex.order)

    async def _catch_up_fills(self, symbol: str, vo: VenueOrder) -> None:
        client_id = self._by_venue.get(vo.venue_id)
        if client_id is None:
            return
        if vo.filled <= 0:
            return
        # The order traded: fetch its fills (recorded ones are skipped by trade id), so none
        # the stream has not delivered yet is lost when the order closes.
        row = self.account.orders[self.account._row[client_id]]
        ids = self._venue_ids[client_id]
        for f in await self.session.fills(symbol, float(row["placed_at"]) - 60.0):
            if f.venue_id in ids:
                self._fold_fill(f, late=not self.stream_up)

    # -- reconciliation ------------------------------------------------------------------------

    async def reconcile(self) -> list[str]:
        """Fold the venue's view into the ledger: working orders, missed fills, unknown orders,
        balances. Return what this round found (one line each; also logged and kept in
        `report`)."""
        first = len(self.report)
        symbols = list(self.account.symbols)
        working = self.account.open_orders()
        since = min([self._last_event_time - 60.0]
                    + [float(self.account.orders[self.account._row[o.client_id]]["placed_at"])
                       - 60.0 for o in working])
        for symbol in symbols:
            for fill in await self.session.fills(symbol, since):
                self._fold_fill(fill, late=True)
        for view in self.account.open_orders():
            order = self.account.order(view.client_id)
            assert order is not None
            found = None
            for venue_id in reversed(self._venue_ids.get(view.client_id, [])):
                found = await self.session.query(venue_id, order.symbol)
                if found is not None:
                    break
            if found is None:
                if self.clock.now() - float(self.account.orders[
                        self.account._row[view.client_id]]["placed_at"]) < 10:
                    continue  # just sent: its answer is still on the way
                self._venue_refused(view.client_id, "the venue never received it (found "
                                    "missing on reconciliation)")
                self.report.append(f"order {view.client_id} never reached {self.venue}")
                continue
            if view.client_id not in self._announced:
                # Known to the venue: the strategy hears of its acceptance now (a restart's
                # orders from before it, or a request whose answer is still on its way).
                self._announced.add(view.client_id)
                self._tell([OrderAccepted(time=self.clock.now(), account=self.account.name,
                                          order=order)])
            self._fold_order(found)
        for vo in await self.session.open_orders(symbols):
            if vo.venue_id in self._by_venue:
                continue
            policy = self.limits.unknown_orders
            self.report.append(f"{self.venue} order {vo.venue_id} ({vo.side} {vo.size:g} "
                               f"{vo.symbol}) is not in the ledger: {policy}")
            if policy == "cancel":
                await self.session.cancel(vo.venue_id, vo.symbol)
            elif policy == "adopt":
                self._adopt(vo)
        try:
            balances = await self.session.balances()
        except TradingError as exc:
            self.report.append(f"balances unavailable: {exc}")
        else:
            self.report.extend(self._compare_balances(balances))
        found = self.report[first:]
        for line in found:
            log.warning("%s reconciliation: %s", self.venue, line)
        self.reconciled += 1
        self._bump()
        return found

    def _adopt(self, vo: VenueOrder) -> None:
        kind = vo.order_type if vo.order_type in ("market", "limit", "stop", "stop_limit") \
            else "limit"
        order = SubmitOrder(client_id=ADOPTED + vo.venue_id, symbol=vo.symbol, side=vo.side,
                            size=vo.size, order_type=kind,
                            limit_price=vo.limit_price if kind in ("limit", "stop_limit")
                            else None,
                            stop_price=vo.stop_price if kind in ("stop", "stop_limit") else None,
                            time=self.clock.now())
        self._commit([OrderAccepted(time=self.clock.now(), account=self.account.name,
                                    order=order)])

    def _compare_balances(self, balances: dict) -> list[str]:
        out = []
        rules = [self.session.rules(s) for s in self.account.symbols]
        if not rules:
            return out
        quote = rules[0].quote.upper()
        have = balances.get(quote)
        if have is not None and abs(have.total - self.account.cash) > 0.01:
            out.append(f"{quote} balance {have.total:,.2f} differs from the account's cash "
                       f"{self.account.cash:,.2f} (deposits, withdrawals or trades outside the "
                       f"engine)")
        for r in rules:
            held = balances.get(r.base.upper())
            pos = self.account.position(r.symbol)
            total = held.total if held is not None else 0.0
            if abs(total - pos) > max(r.lot_size, 1e-12):
                out.append(f"{r.base} balance {total:g} differs from the {r.symbol} position "
                           f"{pos:g}")
        return out

    # -- background tasks ----------------------------------------------------------------------

    async def _on_connected(self) -> None:
        self.stream_up = True
        log.info("%s: private stream up; reconciling", self.venue)
        await self.reconcile()

    async def _stream_loop(self) -> None:
        delay = 0.5
        while True:
            started = self.clock.now()
            try:
                await self.session.private_stream(StreamHooks(self.on_execution,
                                                              self._on_connected))
            except TradingError as exc:
                log.warning("%s: private stream down (%s); polling REST until it is back",
                            self.venue, exc)
            self.stream_up = False
            if self.clock.now() - started > 30:
                delay = 0.5
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _poll_loop(self) -> None:
        while True:
            await trio.sleep(self.limits.poll_every)
            need = set(self._need_fills)
            self._need_fills.clear()
            if self.stream_up and not need:
                continue
            try:
                for view in self.account.open_orders() if not self.stream_up else []:
                    order = self.account.order(view.client_id)
                    found = await self.session.query(self.venue_id(view.client_id), order.symbol)
                    if found is not None:
                        await self._catch_up_fills(order.symbol, found)
                        self._fold_order(found)
                for symbol in need:
                    for f in await self.session.fills(symbol, self._last_event_time - 60.0):
                        self._fold_fill(f)
            except TradingError as exc:
                log.info("%s: polling failed (%s)", self.venue, exc)

    async def _halt_watch(self) -> None:
        if self.directory is None:
            return
        marker = self.directory / HALT_FILE
        while True:
            await trio.sleep(1.0)
            if self.halted is None and marker.exists():
                self.halt(marker.read_text().strip() or "engine account halt")
            elif self.halted is not None and not marker.exists():
                log.warning("account %s resumed (its HALT file was removed)", self.account.name)
                self.halted = None
            self._bump()

    def summary(self) -> dict[str, Any]:
        a = self.account
        return {
            "account": a.name, "venue": self.venue, "cash": a.cash, "equity": a.equity(),
            "fees": a.fees, "realized": a.realized, "halted": self.halted,
            "positions": [p.__dict__ for p in a.positions_view()],
            "open_orders": [o.__dict__ for o in a.open_orders()],
        }


async def open_live_account(name: str, session: Any, clock: Clock, *,
                            limits: LiveLimits | None = None, symbols: list[str],
                            path: Path | None = None) -> VenueBroker:
    """Open (or create from the venue's balances) the live account `name` and rebuild it from
    its ledger. A new account starts with the venue's balance of the symbols' quote currency.

    Raise LiveAccountError for a paper account or another venue's, or for symbols that do not
    share one quote currency; LedgerError (LedgerLocked...) as the ledger does.
    """
    from engine.clearing.ledger import Ledger
    from engine.paths import account_dir

    quotes = {session.rules(s).quote.upper() for s in symbols}
    if len(quotes) != 1:
        raise LiveAccountError(f"a live account trades symbols of one quote currency; "
                               f"{', '.join(symbols)} have {', '.join(sorted(quotes))}")
    quote = quotes.pop()
    directory = path or account_dir(name)
    ledger = Ledger.open(directory)
    try:
        account = Account(name, symbols)
        broker = VenueBroker(account, ledger, session, clock, limits, directory)
        events = list(ledger.events())
        if events:
            first = events[0]
            if not isinstance(first, AccountOpened) or first.venue != session.venue:
                kind = f"a {first.venue} account" if getattr(first, "venue", "") else \
                    "a paper account"
                raise LiveAccountError(f"account {name} is {kind}; pick another --account "
                                       f"for {session.venue}")
            for e in events:
                broker.replay(e)
        else:
            balances = await session.balances()
            held = balances.get(quote)
            opened = AccountOpened(time=clock.now(), account=name,
                                   cash=held.total if held else 0.0, currency=quote,
                                   venue=session.venue)
            ledger.append([opened])
            broker.replay(opened)
    except BaseException:
        ledger.close()
        raise
    return broker
