"""One trading account's state: working orders, cash, positions; the bridge between typed order
messages and the numba clearing core.

`Account` turns commands into order records, runs the matcher on quotes, and turns what the
matcher did into typed events. `Account.apply` replays those same events (from a ledger) into
the same state, with the same kernels, so a rebuilt account equals the live one exactly. It does
no I/O and never reads a clock: time comes in with every call.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numba
import numpy as np

from engine.clearing import _core
from engine.clearing.config import BrokerConfig
from engine.instruments import Instrument, resolve_instrument
from engine.orders import (
    AccountOpened,
    LedgerEvent,
    ModifyOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrdersLinked,
    OrderTriggered,
    SubmitOrder,
    market_order,
)

__all__ = ["Account", "Position", "OrderView", "FillRecord", "SHORT_OF_POWER", "rebuild"]

# How the reason of an order cancelled at its fill for buying power begins.
SHORT_OF_POWER = "insufficient buying power at the fill"

_OTYPE = {"market": _core.MARKET, "limit": _core.LIMIT, "stop": _core.STOP,
          "stop_limit": _core.STOP_LIMIT}
_TIF = {"GTC": _core.GTC, "IOC": _core.IOC, "FOK": _core.FOK, "DAY": _core.DAY}
_REASON = {_core.R_IOC: "IOC: not filled at once", _core.R_FOK: "FOK: could not fill in full",
           _core.R_EXPIRED: "DAY order expired", _core.R_REDUCE_ONLY: "reduce-only: position flat",
           _core.R_OCO: "one-cancels-the-other: the linked order filled",
           _core.R_PARENT: "protection of an entry that ended without a fill",
           _core.R_FLAT: "protection: the position is flat"}
# How the reason of an equity-fraction order cancelled at its fill begins.
NO_WHOLE_LOT = "sized as a fraction of equity"


_NAN, _INF = math.nan, math.inf
_PENDING, _LINK_NONE, _MARKET, _GTC = _core.PENDING, _core.LINK_NONE, _core.MARKET, _core.GTC


def _row_struct(dtype: np.dtype) -> struct.Struct:
    """A struct packing one row of the packed record `dtype` (ints, bools and floats)."""
    codes = {("i", 1): "b", ("i", 4): "i", ("i", 8): "q", ("b", 1): "?", ("f", 8): "d"}
    fmt = "=" + "".join(codes[dtype[n].kind, dtype[n].itemsize] for n in dtype.names)
    packer = struct.Struct(fmt)
    if packer.size != dtype.itemsize:
        raise TypeError(f"{dtype} is not a packed record of fixed-size fields")
    return packer


_ORDER_ROW = _row_struct(_core.order_dtype)


def _compiled(kernel: Any, args: tuple) -> Any:
    """`kernel`'s compiled function for the types of `args`: called without the dispatcher's
    type resolution of every argument on every call (for a kernel of many arrays, more than
    the work of a match); it raises TypeError when given arguments of other types."""
    return kernel.compile(tuple(numba.typeof(a) for a in args))


def _day_end(epoch: float) -> float:
    day = dt.datetime.fromtimestamp(epoch, dt.UTC).date() + dt.timedelta(days=1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


class FillRecord(NamedTuple):
    """An `OrderFilled` without its account, read from a replay's fill log (the rows an
    account that logs its fills writes: `Account.fill_rows`); the same attributes, a fraction
    of the cost."""

    time: float
    fill_id: int
    client_id: str
    symbol: str
    side: str
    price: float
    size: float
    fee: float
    liquidity: str
    remaining: float

    def event(self, account: str) -> OrderFilled:
        return OrderFilled(account=account, **self._asdict())


@dataclass(frozen=True)
class Position:
    symbol: str
    quantity: float
    avg_price: float
    realized: float
    fees: float
    mark: float
    unrealized: float


@dataclass(frozen=True)
class OrderView:
    client_id: str
    symbol: str
    side: str
    order_type: str
    size: float
    remaining: float
    limit_price: float | None
    stop_price: float | None
    tif: str
    triggered: bool
    # An order sized as a fraction of equity (size and remaining 0 until it first fills).
    equity_fraction: float | None = None


class Account:
    """Cash, positions and working orders of one account over a fixed list of symbols, and the
    instruments it trades (`instruments`: rules by symbol, "*" for every symbol; see
    engine.instruments)."""

    def __init__(self, name: str, symbols: list[str], cash: float = 0.0,
                 config: BrokerConfig | None = None,
                 instruments: dict[str, Instrument] | None = None,
                 capacity: int = 1024) -> None:
        self.name = name
        self.config = config or BrokerConfig()
        self._latency = self.config.latency_ms / 1e3  # s from an order's placing to the book
        self.symbols: list[str] = []
        self._index: dict[str, int] = {}
        self.cash0 = float(cash)
        self.account = np.zeros(3)
        self.account[_core.A_CASH] = cash
        self.positions = np.zeros((0, 4))
        self.marks = np.zeros(0)
        self.ticks = np.zeros(0)
        self.lots = np.zeros(0)
        self.min_notionals = np.zeros(0)
        self._rules: list[tuple[float, float, float]] = []  # tick, lot, min notional by index
        # Symbols whose instrument sets no rule (lot, tick, minimum notional): an order in units
        # in one of them breaks none, and the broker skips looking them up.
        self.ruleless: set[str] = set()
        self.instruments: dict[str, Instrument] = dict(instruments or {})
        self.orders = np.zeros(capacity, dtype=_core.order_dtype)
        self._order_bytes = self.orders.view(np.uint8)  # _add writes rows through it
        self._capacity = capacity  # rows in `orders` (grown by `_room`, with the byte view)
        self.n_orders = 0
        self._start = 0  # rows before it are done
        # Whether rows from `_start` on exist (orders that may still work): n_orders > _start,
        # kept where either changes; the one way the broker and the replays ask it.
        self.unsettled = False
        self._bounds = np.zeros(2, dtype=np.int64)  # (start, n_orders) for the kernel
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._submitted: dict[str, SubmitOrder] = {}
        # Plain market orders placed through `add_market` whose `SubmitOrder` is built only
        # when something reads the orders (`_submits`): their arguments, in placement order.
        self._unbuilt: list[tuple] = []
        # Where those orders go once built, after the account's own record: the broker's list
        # of submitted orders (`PaperBroker.orders`), when a broker set it.
        self.placed: list[SubmitOrder] | None = None
        self._events = np.zeros(256, dtype=_core.event_dtype)
        self._cfg = self.config.vector()
        self.fills = 0
        # Set (`log_fills`), fills land here as rows (`_core.fill_dtype`, their client ids in
        # `fill_row_ids`) instead of coming back as events: for a replay nobody hears fills
        # from (no ledger, no on_fill), which takes them (`take_fill_rows`) into its log.
        self.fill_rows: np.ndarray | None = None
        self.n_fill_rows = 0
        self.fill_row_ids: list[str] = []
        self._step = 0  # the replay step fills logged now are tagged with
        self._kernel: Any = None  # _core.match_point compiled for this account's arrays
        self._state = np.zeros(2 + len(self._events), dtype=np.int64)  # match_point's
        for s in symbols:
            self.add_symbol(s)

    @property
    def _submits(self) -> dict[str, SubmitOrder]:
        """Every order the account knows by client id, in placement order."""
        if self._unbuilt:
            self._build()
        return self._submitted

    def _build(self) -> None:
        """Build the orders `add_market` put on the book (before anything else is recorded,
        so both records keep placement order)."""
        unbuilt, self._unbuilt = self._unbuilt, []
        submitted, placed = self._submitted, self.placed
        for args in unbuilt:
            order = market_order(*args)
            submitted[args[0]] = order
            if placed is not None:
                placed.append(order)

    # -- symbols, instruments and marks --------------------------------------------------------

    def add_symbol(self, symbol: str) -> int:
        if symbol in self._index:
            return self._index[symbol]
        self._index[symbol] = len(self.symbols)
        self.symbols.append(symbol)
        self.positions = np.vstack([self.positions, np.zeros((1, 4))])
        self.marks = np.append(self.marks, np.nan)
        self.ticks = np.append(self.ticks, 0.0)
        self.lots = np.append(self.lots, 0.0)
        self.min_notionals = np.append(self.min_notionals, 0.0)
        self._rules.append((0.0, 0.0, 0.0))
        self._load_rules(self._index[symbol])
        return self._index[symbol]

    def _load_rules(self, i: int) -> None:
        inst = self.instrument(self.symbols[i])
        self.ticks[i] = inst.tick_size or 0.0
        self.lots[i] = inst.lot_size or 0.0
        self.min_notionals[i] = inst.min_notional or 0.0
        # The same as Python floats, what `match_point` hands the kernel.
        self._rules[i] = (float(self.ticks[i]), float(self.lots[i]),
                          float(self.min_notionals[i]))
        if inst.tick_size is None and inst.lot_size is None and not inst.min_notional:
            self.ruleless.add(inst.symbol)
        else:
            self.ruleless.discard(inst.symbol)

    def instrument(self, symbol: str) -> Instrument:
        """`symbol`'s trading rules (lot, tick, minimum notional; none set when not given)."""
        return resolve_instrument(self.instruments, symbol)

    def set_instrument(self, instrument: Instrument) -> None:
        """Set (or replace) one symbol's rules; orders already working keep their sizes."""
        self.instruments[instrument.symbol] = instrument
        i = self._index.get(instrument.symbol)
        if i is not None:
            self._load_rules(i)

    def last_mark(self, symbol: str) -> float:
        """The price positions in `symbol` are valued at (NaN when none is known)."""
        i = self._index.get(symbol)
        return math.nan if i is None else float(self.marks[i])

    def mark(self, symbol: str, price: float) -> None:
        """Set the price positions in `symbol` are valued at (the latest mid)."""
        self.marks[self.add_symbol(symbol)] = price

    # -- reading -------------------------------------------------------------------------------

    @property
    def cash(self) -> float:
        return float(self.account[_core.A_CASH])

    @property
    def fees(self) -> float:
        return float(self.account[_core.A_FEES])

    @property
    def realized(self) -> float:
        return float(self.account[_core.A_REALIZED])

    def position(self, symbol: str) -> float:
        i = self._index.get(symbol)
        return 0.0 if i is None else float(self.positions[i, _core.P_QTY])

    def equity(self) -> float:
        """Cash plus positions marked to the latest mid (entry price where none is known)."""
        return float(_core.equity(self.account, self.positions, self.marks))

    def gross_exposure(self) -> float:
        """Sum of |position x mark| in account currency."""
        return float(_core.gross_exposure(self.positions, self.marks))

    def positions_view(self) -> list[Position]:
        out = []
        for s, i in self._index.items():
            q, avg, realized, fees = self.positions[i]
            if q == 0.0 and realized == 0.0 and fees == 0.0:
                continue
            mark = self.marks[i] if not math.isnan(self.marks[i]) else avg
            out.append(Position(s, float(q), float(avg), float(realized), float(fees),
                                float(mark), float(q * (mark - avg)) if q else 0.0))
        return out

    def open_orders(self) -> list[OrderView]:
        out = []
        for row in range(self.n_orders):
            o = self.orders[row]
            if o["status"] > _core.WORKING:
                continue
            sub = self._submits[self._ids[row]]
            out.append(OrderView(sub.client_id, sub.symbol, sub.side, sub.order_type,
                                 float(o["size"]), float(o["remaining"]),
                                 None if math.isnan(o["limit"]) else float(o["limit"]),
                                 None if math.isnan(o["stop"]) else float(o["stop"]),
                                 sub.tif, bool(o["triggered"]), sub.equity_fraction))
        return out

    def working(self, client_id: str) -> bool:
        row = self._row.get(client_id)
        return row is not None and self.orders[row]["status"] <= _core.WORKING

    def remember(self, order: SubmitOrder) -> None:
        """Know an order that never reached the book (rejected), to route its events."""
        self._submits.setdefault(order.client_id, order)

    def order(self, client_id: str) -> SubmitOrder | None:
        return self._submits.get(client_id)

    def orders_of(self, strategy: str) -> list[tuple[SubmitOrder, float, float]]:
        """Every order `strategy` placed (rejected ones too), with the size filled so far and
        the size still working (0 once done), in the order they were placed."""
        out = []
        for cid, sub in self._submits.items():
            if sub.strategy != strategy:
                continue
            row = self._row.get(cid)
            if row is None:
                out.append((sub, 0.0, 0.0))  # rejected: it never reached the book
                continue
            o = self.orders[row]
            working = float(o["remaining"]) if o["status"] <= _core.WORKING else 0.0
            out.append((sub, float(o["size"] - o["remaining"]), working))
        return out

    def working_size(self, symbol: str, side: int) -> float:
        """Unfilled size of working orders in `symbol` on one side (+1 buys, -1 sells);
        protective children are left out (they close what is there, they do not trade toward a
        target)."""
        i = self._index.get(symbol)
        if i is None:
            return 0.0
        o = self.orders[self._start: self.n_orders]
        mask = ((o["sym"] == i) & (o["side"] == side) & (o["status"] <= _core.WORKING)
                & (o["parent"] < 0))
        return float(o["remaining"][mask].sum())

    # -- commands (already risk-checked by the broker) -----------------------------------------

    def accept(self, order: SubmitOrder, now: float) -> OrderAccepted:
        """Put an order on the book (after the configured latency); return the event."""
        event = OrderAccepted(time=now, account=self.name, order=order)
        self._add(order, now, self.config.latency_ms / 1e3)
        return event

    def accept_quietly(self, order: SubmitOrder, now: float) -> None:
        """`accept` without building the event (for runs where no one reads it)."""
        self._add(order, now, self.config.latency_ms / 1e3)

    def _add(self, order: SubmitOrder, now: float, latency: float) -> int:
        if order.client_id in self._row:
            raise ValueError(f"duplicate client order id {order.client_id!r}")
        row = self._room()
        sym = self._index.get(order.symbol)
        size = order.size or 0.0
        # The row packed straight into the table's memory: half the cost of assigning a tuple
        # to a record, on every order's way to the book.
        _ORDER_ROW.pack_into(
            self._order_bytes, row * _ORDER_ROW.size,
            self.add_symbol(order.symbol) if sym is None else sym, 1 if order.side == "buy" else -1,
            _OTYPE[order.order_type], _TIF[order.tif], order.reduce_only, _PENDING,
            False, False, False, size, size,
            _NAN if order.limit_price is None else order.limit_price,
            _NAN if order.stop_price is None else order.stop_price,
            now, now + latency, _day_end(now) if order.tif == "DAY" else _INF,
            -1, -1, -1, -1, _LINK_NONE, _NAN, _NAN, _NAN, 0.0,
            _NAN if order.equity_fraction is None else order.equity_fraction)
        self.n_orders = row + 1
        self.unsettled = True
        self._ids.append(order.client_id)
        self._row[order.client_id] = row
        self._submits[order.client_id] = order  # after the orders placed before it
        if order.protected:
            self._add_protection(order, row, now)
        return row

    def add_market(self, client_id: str, sym: int, symbol: str, side: str, size: float,
                   now: float, strategy: str | None) -> None:
        """Put a plain GTC market order for `size` units (a float above 0) of symbol index
        `sym` on the book, as `accept_quietly(market_order(...), now)` would, with its
        `SubmitOrder` built only when read (`_submits`, and `placed`)."""
        if client_id in self._row:
            raise ValueError(f"duplicate client order id {client_id!r}")
        row = self.n_orders
        if row == self._capacity:  # (an int of the account's: the table itself is not touched)
            row = self._room()
        _ORDER_ROW.pack_into(
            self._order_bytes, row * _ORDER_ROW.size,
            sym, 1 if side == "buy" else -1, _MARKET, _GTC, False, _PENDING,
            False, False, False, size, size, _NAN, _NAN, now, now + self._latency,
            _INF, -1, -1, -1, -1, _LINK_NONE, _NAN, _NAN, _NAN, 0.0, _NAN)
        self.n_orders = row + 1
        self.unsettled = True
        self._ids.append(client_id)
        self._row[client_id] = row
        self._unbuilt.append((client_id, symbol, side, size, False, now, strategy))

    def _room(self) -> int:
        """The next order row, the table doubled (and its byte view made anew) when full."""
        row = self.n_orders
        if row == self._capacity:
            self.orders = np.concatenate([self.orders, np.zeros_like(self.orders)])
            self._order_bytes = self.orders.view(np.uint8)
            self._capacity = len(self.orders)
        return row

    def _add_protection(self, entry: SubmitOrder, row: int, now: float) -> None:
        """Dormant children of `entry` (stop or trailing stop, take-profit), linked to it and to
        each other; they wake as it fills (`_core.filled_links`)."""
        exit_side = "sell" if entry.side == "buy" else "buy"
        children = []
        stop = entry.stop_loss or entry.stop_loss_pct or entry.trail or entry.trail_pct
        if stop is not None:
            children.append(("sl", "stop", entry.stop_loss or 1.0))
        if entry.take_profit is not None or entry.take_profit_pct is not None:
            children.append(("tp", "limit", entry.take_profit or 1.0))
        rows = []
        for tag, kind, price in children:
            child = SubmitOrder(
                client_id=f"{entry.client_id}.{tag}", symbol=entry.symbol, side=exit_side,
                size=entry.size or 1.0, order_type=kind, reduce_only=True,
                stop_price=price if kind == "stop" else None,
                limit_price=price if kind == "limit" else None,
                time=entry.time, strategy=entry.strategy)
            r = self._add(child, now, 0.0)
            o = self.orders[r]
            o["status"] = _core.DORMANT
            o["size"] = o["remaining"] = 0.0
            o["parent"] = row
            if tag == "sl":
                self.orders[row]["sl_row"] = r
                o["rel"] = _NAN if entry.stop_loss_pct is None else entry.stop_loss_pct
                o["trail"] = _NAN if entry.trail is None else entry.trail
                o["trail_pct"] = _NAN if entry.trail_pct is None else entry.trail_pct
            else:
                self.orders[row]["tp_row"] = r
                o["rel"] = _NAN if entry.take_profit_pct is None else entry.take_profit_pct
            rows.append(r)
        if len(rows) == 2:
            self._link(rows[0], rows[1], _core.LINK_MIRROR)

    def _link(self, a: int, b: int, mode: int) -> None:
        for x, y in ((a, b), (b, a)):
            self.orders[x]["oco"] = y
            self.orders[x]["link"] = mode

    def link_oco(self, first: str, second: str, now: float) -> OrdersLinked:
        """Make two working orders one-cancels-the-other; ValueError names what is wrong."""
        rows = []
        for cid in (first, second):
            row = self._row.get(cid)
            if row is None or self.orders[row]["status"] > _core.WORKING:
                raise ValueError(f"one-cancels-the-other: {cid!r} is not a working order")
            if self.orders[row]["oco"] >= 0:
                raise ValueError(f"one-cancels-the-other: {cid!r} is already linked")
            rows.append(row)
        if first == second:
            raise ValueError("one-cancels-the-other needs two different orders")
        self._link(rows[0], rows[1], _core.LINK_CANCEL)
        return OrdersLinked(time=now, account=self.name, client_ids=(first, second))

    def children(self, client_id: str) -> list[str]:
        """Client ids of the protective children of entry `client_id` still dormant or working."""
        row = self._row.get(client_id)
        if row is None:
            return []
        o = self.orders[row]
        return [self._ids[c] for c in (int(o["sl_row"]), int(o["tp_row"]))
                if c >= 0 and self.orders[c]["status"] <= _core.WORKING]

    def cancel(self, client_id: str, now: float, reason: str = "cancelled") -> OrderCancelled:
        """Cancel an order (its dormant protection goes with it: `cancel_children`)."""
        row = self._row[client_id]
        o = self.orders[row]
        o["status"] = _core.CANCELLED
        return OrderCancelled(time=now, account=self.name, client_id=client_id,
                              symbol=self._submits[client_id].symbol,
                              remaining=float(o["remaining"]), reason=reason)

    def cancel_children(self, client_id: str, now: float) -> list[OrderCancelled]:
        """Cancel the children of a cancelled entry that never woke (it filled nothing)."""
        row = self._row[client_id]
        out = []
        for c in (int(self.orders[row]["sl_row"]), int(self.orders[row]["tp_row"])):
            if c >= 0 and self.orders[c]["status"] == _core.DORMANT:
                out.append(self.cancel(self._ids[c], now, _REASON[_core.R_PARENT]))
        return out

    def modify(self, cmd: ModifyOrder, now: float) -> OrderModified:
        """Change a working order's size (total, not below what has filled) and/or prices."""
        row = self._row[cmd.client_id]
        o = self.orders[row]
        filled = o["size"] - o["remaining"]
        if cmd.size is not None:
            if o["size"] == 0.0 and not math.isnan(o["frac"]):
                raise ValueError("the size of an order sized as a fraction of equity is set "
                                 "when it fills: cancel it and place another")
            if cmd.size <= filled:
                raise ValueError(f"new size {cmd.size:g} is not above the {filled:g} already filled")
            o["remaining"] = cmd.size - filled
            o["size"] = cmd.size
        if cmd.limit_price is not None:
            if math.isnan(o["limit"]):
                raise ValueError("a limit price applies to limit and stop-limit orders only")
            o["limit"] = cmd.limit_price
        if cmd.stop_price is not None:
            if math.isnan(o["stop"]) or o["triggered"]:
                raise ValueError("a stop price applies to untriggered stop orders only")
            o["stop"] = cmd.stop_price
        return OrderModified(time=now, account=self.name, client_id=cmd.client_id,
                             size=float(o["size"]),
                             limit_price=None if math.isnan(o["limit"]) else float(o["limit"]),
                             stop_price=None if math.isnan(o["stop"]) else float(o["stop"]))

    # -- matching ------------------------------------------------------------------------------

    def match(self, symbol: str, now: float, bid: float = math.nan, ask: float = math.nan,
              bid_size: float = math.nan, ask_size: float = math.nan,
              trade: float = math.nan, touch: bool = False) -> list[LedgerEvent]:
        """Match the symbol's working orders against one quote; return what happened.

        `touch` marks a point on a continuous path (inside a replayed bar): see match_quote."""
        i = self._index.get(symbol)
        if i is None or not self.n_orders:
            return []
        out: list[LedgerEvent] = []
        while True:
            bounds = self._bounds
            bounds[0] = self._start
            bounds[1] = self.n_orders
            n = _core.match_quote(self.orders, bounds, i, now, bid, ask, bid_size, ask_size, trade,
                                  self._cfg, self.ticks[i], self.account, self.positions,
                                  self.marks, self._events, touch, self.lots[i],
                                  self.min_notionals[i])
            self._start = int(bounds[0])
            self.unsettled = self.n_orders > self._start
            if n:
                out.extend(self._convert(n, now, i))
            # A full event buffer means orders are left to look at: match again on what remains.
            if n < len(self._events) - 2:
                return out

    def log_fills(self, capacity: int = 4096) -> None:
        """Log fills as rows from now on (see `fill_rows`)."""
        self.fill_rows = np.zeros(max(capacity, 2 * len(self._events)), dtype=_core.fill_dtype)
        self.n_fill_rows = 0
        self.fill_row_ids = []

    def take_fill_rows(self) -> tuple[np.ndarray, list[str]]:
        """The fills logged as rows since the last take, and their client ids (the rows a
        view, valid until the next match)."""
        assert self.fill_rows is not None
        rows, ids = self.fill_rows[:self.n_fill_rows], self.fill_row_ids
        self.n_fill_rows = 0
        self.fill_row_ids = []
        return rows, ids

    def _row_room(self) -> np.ndarray:
        """The fill rows, with room for a full event buffer's fills after those logged."""
        rows = self.fill_rows
        assert rows is not None
        if self.n_fill_rows + len(self._events) > len(rows):
            grown = np.zeros(2 * len(rows), dtype=_core.fill_dtype)
            grown[:self.n_fill_rows] = rows[:self.n_fill_rows]
            rows = self.fill_rows = grown
        return rows

    def match_point(self, i: int, now: float, price: float, touch: bool = False,
                    step: int = 0) -> list[LedgerEvent]:
        """`match(symbol, now, price, price, nan, nan, price, touch)` for the symbol of index
        `i`: one point of a price path (a replay's bar), bid, ask and trade all at `price`.
        Fills logged as rows (`log_fills`) are written by the kernel (`_core.match_point`),
        tagged with `step`; the other events are returned."""
        rows = self.fill_rows
        if rows is None:
            return self.match(self.symbols[i], now, price, price, _NAN, _NAN, price, touch)
        self._step = step
        out: list[LedgerEvent] = []
        tick, lot, min_notional = self._rules[i]
        at, price, touch = float(now), float(price), bool(touch)
        while True:
            if self.n_fill_rows + len(self._events) > len(rows):
                rows = self._row_room()
            args = (self.orders, self._state, self._start, self.n_orders, i, at, price, touch,
                    self._cfg, tick, lot, min_notional, self.account, self.positions,
                    self.marks, self._events, rows, self.n_fill_rows, self.fills, step)
            try:
                other, fills, full, start, row = self._kernel(*args)
            except TypeError:  # the first call, or arrays of other types: compiled for them
                self._kernel = _compiled(_core.match_point, args)
                other, fills, full, start, row = self._kernel(*args)
            self._start = start
            self.unsettled = self.n_orders > start
            if fills:
                self.fills += fills
                self.n_fill_rows += fills
                ids = self._ids
                if fills == 1:
                    self.fill_row_ids.append(ids[row])
                else:
                    self.fill_row_ids.extend(
                        [ids[r] for r in self._state[2:2 + fills].tolist()])
            if other:
                out.extend(self._convert(other, now, i))
            if not full:
                return out

    def _convert(self, n: int, now: float, sym: int) -> list[LedgerEvent]:
        """The `n` events the matcher wrote for symbol index `sym`, as typed events; fills go
        to the fill rows instead when they are logged (`log_fills`)."""
        out: list[LedgerEvent] = []
        name = self.name
        logged = self.fill_rows is not None
        events = self._events
        for kind, row, reason, price, size, fee, remaining, equity, exposure, side \
                in (events[:n].tolist() if n > 1 else (events.item(0),)):
            cid = self._ids[row]
            if kind == _core.EV_FILL and logged:
                # Logged as a row, from the order's record: its SubmitOrder is not needed.
                self.fills += 1
                self._row_room()[self.n_fill_rows] = (
                    self._step, now, self.fills, sym, side, reason == _core.MAKER, price, size,
                    fee, remaining)
                self.n_fill_rows += 1
                self.fill_row_ids.append(cid)
                continue
            sub = self._submits[cid]
            if kind == _core.EV_FILL:
                self.fills += 1
                out.append(OrderFilled(
                    time=now, account=name, fill_id=self.fills,
                    client_id=cid, symbol=sub.symbol, side=sub.side, price=price, size=size,
                    fee=fee, liquidity="maker" if reason == _core.MAKER else "taker",
                    remaining=remaining))
            elif kind == _core.EV_TRIGGER:
                out.append(OrderTriggered(time=now, account=name, client_id=cid,
                                          symbol=sub.symbol, price=price))
            elif kind == _core.EV_MOVED:
                # A trailing stop ratcheted: recorded, so a restart resumes from it.
                out.append(OrderModified(time=now, account=name, client_id=cid,
                                         size=float(self.orders[row]["size"]), stop_price=price))
            elif reason == _core.R_NO_UNITS or reason == _core.R_MIN_NOTIONAL:
                out.append(OrderCancelled(time=now, account=name, client_id=cid,
                                          symbol=sub.symbol, remaining=0.0,
                                          reason=self._unsized(sub, reason, price, size, equity)))
            else:
                why = (_REASON[reason] if reason != _core.R_BUYING_POWER else
                       self._short_of_power(sub, price, size, equity, exposure))
                out.append(OrderCancelled(time=now, account=name, client_id=cid,
                                          symbol=sub.symbol, remaining=remaining, reason=why))
        return out

    def _unsized(self, order: SubmitOrder, reason: int, price: float, size: float,
                 available: float) -> str:
        """The reason of an equity-fraction order cancelled at its fill (see match_quote)."""
        inst = self.instrument(order.symbol)
        asked = f"{NO_WHOLE_LOT} ({order.equity_fraction * 100:.4g}% of {available:,.2f} available)"
        if reason == _core.R_NO_UNITS:
            return (f"{asked}: less than one lot of {inst.sizing_lot:g} {order.symbol} at "
                    f"{price:g} with its fee")
        return f"{asked}: {inst.notional_violation(size, price)}"

    def _short_of_power(self, order: SubmitOrder, price: float, size: float, equity: float,
                        exposure: float) -> str:
        """The reason of a cancel for buying power (see match_quote): the fill that did not fit,
        or (NaN equity) the rest of an order shrunk to what fit."""
        leverage = self.config.risk.leverage
        if math.isnan(equity):
            return (f"{SHORT_OF_POWER}: filled what fit at {price:g}, the "
                    f"remaining {size:g} {order.symbol} would exceed {leverage:g}x equity")
        verb = "buying" if order.side == "buy" else "selling"
        return (f"{SHORT_OF_POWER}: {verb} {size:g} {order.symbol} at "
                f"{price:g} would take gross exposure to {exposure:,.2f}, above {leverage:g}x "
                f"equity of {equity:,.2f}")

    # -- replay --------------------------------------------------------------------------------

    def apply(self, event: LedgerEvent) -> None:
        """Apply a ledger event to the state, exactly as it happened live."""
        if isinstance(event, AccountOpened):
            self.cash0 = event.cash
            self.account[:] = 0.0
            self.account[_core.A_CASH] = event.cash
        elif isinstance(event, OrderAccepted):
            row = self._add(event.order, event.time, self.config.latency_ms / 1e3)
            # A restored order has met the book already: later fills of it rest as maker.
            self.orders[row]["attempted"] = True
        elif isinstance(event, OrderFilled):
            row = self._row[event.client_id]
            o = self.orders[row]
            sym = int(o["sym"])
            if o["size"] == 0.0 and not math.isnan(o["frac"]):
                # An equity-fraction order's first fill: its size was resolved then.
                o["size"] = event.size + event.remaining
            q0 = float(self.positions[sym, _core.P_QTY])
            _core.apply_fill(self.account, self.positions, sym, event.signed_size,
                             event.price, event.fee)
            o["remaining"] = event.remaining
            o["fee_charged"] = True
            o["status"] = _core.FILLED if event.remaining == 0.0 else _core.WORKING
            self.fills = max(self.fills, event.fill_id)
            # The fill's effect on linked orders, as the matcher had it (cancels follow as
            # their own events).
            _core.filled_links(self.orders, row, event.size, event.price, q0,
                               float(self.positions[sym, _core.P_QTY]), event.time,
                               self.ticks[sym])
        elif isinstance(event, OrdersLinked):
            a, b = (self._row[c] for c in event.client_ids)
            self._link(a, b, _core.LINK_CANCEL)
        elif isinstance(event, OrderTriggered):
            self.orders[self._row[event.client_id]]["triggered"] = True
        elif isinstance(event, OrderCancelled):
            self.orders[self._row[event.client_id]]["status"] = _core.CANCELLED
        elif isinstance(event, OrderModified):
            o = self.orders[self._row[event.client_id]]
            filled = o["size"] - o["remaining"]
            o["size"] = event.size
            o["remaining"] = event.size - filled
            if event.limit_price is not None:
                o["limit"] = event.limit_price
            if event.stop_price is not None:
                o["stop"] = event.stop_price


def rebuild(account: Account, events: Iterable[LedgerEvent], source: object) -> int:
    """Apply a ledger's events to a new `account`; return how many there were.

    Raise LedgerError naming `source` (the ledger's path) when the history does not start with
    AccountOpened or an event does not follow from the ones before it (an order filled that
    was never accepted): the ledger then holds something other than one account's history."""
    from engine.clearing.ledger import RESTORE_HINT, LedgerError

    n = 0
    for event in events:
        if n == 0 and not isinstance(event, AccountOpened):
            raise LedgerError(f"{source}: record 0 is an {type(event).__name__}, not the "
                              f"AccountOpened an account's ledger starts with; {RESTORE_HINT}")
        try:
            account.apply(event)
        except (KeyError, ValueError, IndexError) as exc:
            raise LedgerError(f"{source}: record {n} ({type(event).__name__}) does not follow "
                              f"from the records before it ({exc!r}); {RESTORE_HINT}") from None
        n += 1
    return n
