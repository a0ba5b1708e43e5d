"""The deterministic clearing core: order records, matching against a quote, and accounting.

Pure numba kernels over record arrays; the caller owns all state (orders, account, positions)
and passes it in, so the same kernels fill paper trading, replays and backtests. No trio, no
pydantic, no I/O, no wall clock: time arrives as an argument (epoch seconds).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# -- order records ------------------------------------------------------------------------------

MARKET, LIMIT, STOP, STOP_LIMIT = 0, 1, 2, 3
GTC, IOC, FOK, DAY = 0, 1, 2, 3
PENDING, WORKING, FILLED, CANCELLED = 0, 1, 2, 3  # PENDING: not yet at the book (latency)
# A protective child (stop-loss, take-profit, trailing stop) waiting for its entry to fill.
DORMANT = -1
# How two linked orders answer each other's fills: an OCO pair cancels the other on the first
# fill; a bracket's two children shrink each other by every fill (both protect one position).
LINK_NONE, LINK_CANCEL, LINK_MIRROR = 0, 1, 2

order_dtype = np.dtype([
    ("sym", np.int32),
    ("side", np.int8),          # +1 buy, -1 sell
    ("otype", np.int8),
    ("tif", np.int8),
    ("reduce_only", np.bool_),
    ("status", np.int8),
    ("triggered", np.bool_),
    ("attempted", np.bool_),    # has met the book once (later fills of a resting limit: maker)
    ("fee_charged", np.bool_),  # the fixed per-order fee is paid with the first fill
    ("size", np.float64),
    ("remaining", np.float64),
    ("limit", np.float64),
    ("stop", np.float64),
    ("placed_at", np.float64),
    ("active_at", np.float64),  # epoch s when the order reaches the book (placed + latency)
    ("expire_at", np.float64),  # epoch s when a DAY order expires (inf otherwise)
    # Protective orders: an entry's children (rows, -1: none), a child's parent and the linked
    # order of an OCO pair or a bracket (rows, -1: none) and how they are linked (LINK_*).
    ("sl_row", np.int64),
    ("tp_row", np.int64),
    ("parent", np.int64),
    ("oco", np.int64),
    ("link", np.int8),
    # A child priced off its entry's average fill: the fraction away from it (NaN: a price).
    ("rel", np.float64),
    # A trailing stop: its distance from the best price since it started, in price units or
    # as a fraction of that price (NaN: not trailing).
    ("trail", np.float64),
    ("trail_pct", np.float64),
    ("filled_value", np.float64),  # sum of price x size of the fills so far
    # An order sized as this fraction of the equity available, resolved at its first fill
    # (size 0 until then; NaN: sized in units). See fraction_units.
    ("frac", np.float64),
])

# -- events the matcher emits ---------------------------------------------------------------------

EV_FILL, EV_TRIGGER, EV_CANCEL, EV_MOVED = 0, 1, 2, 3  # EV_MOVED: a trailing stop ratcheted
# Why an order stopped working without filling (EV_CANCEL's `reason`).
R_IOC, R_FOK, R_EXPIRED, R_REDUCE_ONLY, R_BUYING_POWER = 0, 1, 2, 3, 4
R_OCO, R_PARENT, R_FLAT = 5, 6, 7  # the linked order filled; the entry ended; position flat
# An equity-fraction order resolved to no whole lot, or to less than the minimum notional.
R_NO_UNITS, R_MIN_NOTIONAL = 8, 9
MAKER, TAKER = 0, 1

event_dtype = np.dtype([
    ("kind", np.int8),
    ("order", np.int64),     # row in the order array
    ("reason", np.int8),     # EV_CANCEL: R_*; EV_FILL: MAKER/TAKER
    ("price", np.float64),
    ("size", np.float64),    # unsigned fill size
    ("fee", np.float64),
    ("remaining", np.float64),
    # EV_CANCEL for R_BUYING_POWER: the account after the fill that did not fit (for the reason);
    # for R_NO_UNITS: the equity available (in `equity`).
    ("equity", np.float64),
    ("exposure", np.float64),
    ("side", np.int8),       # EV_FILL: the order's side (+1 buy, -1 sell)
])

# A fill as a row of a replay's fill log (engine.backtests.records): the replay step it happened
# at, then the fields of an OrderFilled (side +1 buy / -1 sell, maker True for a maker fill;
# `sym` the symbol's index; client ids are kept beside the rows).
fill_dtype = np.dtype([("step", np.int64), ("time", np.float64), ("fill_id", np.int64),
                       ("sym", np.int32), ("side", np.int8), ("maker", np.bool_),
                       ("price", np.float64), ("size", np.float64), ("fee", np.float64),
                       ("remaining", np.float64)])

# -- configuration (float64 array; named slots) ---------------------------------------------------

C_FEE_PER_UNIT, C_FEE_MAKER_PCT, C_FEE_TAKER_PCT, C_FEE_FIXED = 0, 1, 2, 3
C_SLIP_TICKS, C_SLIP_SPREAD, C_STOP_MODE, C_PARTIAL, C_SLIP_PCT = 4, 5, 6, 7, 8
# Buying power at the fill: the leverage cap (0: none) and whether a fill that does not fit is
# shrunk to what does (else the order is cancelled).
C_LEVERAGE, C_SHRINK = 9, 10
N_CONFIG = 11
STOP_ON_TRADE, STOP_ON_MID, STOP_ON_BIDASK = 0, 1, 2

# Account: cash, fees paid, realized PnL total. Positions per symbol: quantity (signed),
# average entry price, realized PnL, fees.
A_CASH, A_FEES, A_REALIZED = 0, 1, 2
P_QTY, P_AVG, P_REALIZED, P_FEES = 0, 1, 2, 3

_EPS = 1e-12


@njit(cache=True)
def apply_fill(account, positions, sym, qty, price, fee):
    """Book a fill of `qty` units (signed: + buys) at `price` with `fee` into cash and position.

    Average price moves only when a position grows; reducing realizes PnL against it; a fill
    through zero realizes the closed part and opens the rest at the fill price.
    """
    q0 = positions[sym, P_QTY]
    avg = positions[sym, P_AVG]
    account[A_CASH] -= qty * price + fee
    account[A_FEES] += fee
    positions[sym, P_FEES] += fee
    q1 = q0 + qty
    scale = max(abs(q0), abs(qty), 1.0)
    if abs(q1) <= _EPS * scale:
        q1 = 0.0
    if q0 == 0.0 or (q0 > 0) == (qty > 0):
        positions[sym, P_AVG] = (avg * abs(q0) + price * abs(qty)) / abs(q1) if q1 != 0.0 else 0.0
    else:
        closed = min(abs(qty), abs(q0))
        pnl = closed * (price - avg) * (1.0 if q0 > 0 else -1.0)
        positions[sym, P_REALIZED] += pnl
        account[A_REALIZED] += pnl
        if q1 == 0.0:
            positions[sym, P_AVG] = 0.0
        elif (q1 > 0) != (q0 > 0):
            positions[sym, P_AVG] = price
    positions[sym, P_QTY] = q1


@njit(cache=True)
def _emit(events, n, kind, order, reason, price, size, fee, remaining):
    events[n]["kind"] = kind
    events[n]["order"] = order
    events[n]["reason"] = reason
    events[n]["price"] = price
    events[n]["size"] = size
    events[n]["fee"] = fee
    events[n]["remaining"] = remaining
    return n + 1


@njit(cache=True)
def _fee(cfg, o, price, size, liquidity):
    pct = cfg[C_FEE_MAKER_PCT] if liquidity == MAKER else cfg[C_FEE_TAKER_PCT]
    fee = cfg[C_FEE_PER_UNIT] * size + pct * price * size
    if not o["fee_charged"]:
        fee += cfg[C_FEE_FIXED]
        o["fee_charged"] = True
    return fee


@njit(cache=True)
def match_quote(orders, bounds, sym, now, bid, ask, bid_size, ask_size, trade, cfg, tick,
                account, positions, marks, events, touch=False, lot=0.0, min_notional=0.0):
    """Match the working orders of `sym` against one quote at `now` (epoch s).

    `bid`/`ask` are the top of book (NaN when unknown), sizes NaN or 0 when not displayed,
    `trade` the price of a trade in this quote (NaN if none). Market orders take the opposite
    side (plus slippage); limits fill when the opposite side reaches them, at the better of limit
    and quote; stops trigger on `cfg[C_STOP_MODE]` prices and then work as market or limit. With
    `cfg[C_PARTIAL]` set, fills are capped at the displayed size and the rest keeps working.
    With `touch`, the quote is a point on a continuous price path (the inside of a bar in a
    replay): the price moved through every level since the previous point, so a limit fills at
    its limit and a stop at its stop price; without it (a real quote, or a bar's open after a
    gap) they fill at the quote. With a leverage cap (`cfg[C_LEVERAGE]` > 0) each fill that would
    grow the position is checked first, at its price with its fee, against the gross exposure
    after it (other symbols valued at `marks`): one that does not fit cancels the order
    (R_BUYING_POWER) or, with `cfg[C_SHRINK]`, fills the size that fits and cancels the rest.
    An order sized as a fraction of equity gets its size when it first meets a price it fills
    at (`fraction_units`, whole lots of `lot` units, 1 when 0): no whole lot cancels it
    (R_NO_UNITS), and so does a size worth less than `min_notional` (R_MIN_NOTIONAL). `tick`
    (price units, 0: none) is the step of slippage in ticks and of the prices computed here
    (protective children priced off their entry, trailing stops).
    `bounds` holds (first row that may still work, rows in use);
    the first is moved past the orders this call finishes, saving the caller a second kernel
    call. Returns the number of events written to `events` (stops early if full).
    """
    start = bounds[0]
    n_orders = bounds[1]
    n = 0
    cap = events.shape[0]
    partial = cfg[C_PARTIAL] != 0.0
    avail_ask = ask_size if partial and ask_size > 0 else np.inf
    avail_bid = bid_size if partial and bid_size > 0 else np.inf
    have_book = not (math.isnan(bid) or math.isnan(ask))
    lev = cfg[C_LEVERAGE]
    shrink = cfg[C_SHRINK] != 0.0
    for i in range(start, n_orders):
        if n + 3 > cap:
            break
        o = orders[i]
        if o["sym"] != sym or o["status"] > WORKING or o["active_at"] > now \
                or o["status"] == DORMANT:
            continue
        o["status"] = WORKING
        buy = o["side"] > 0
        if now >= o["expire_at"]:
            o["status"] = CANCELLED
            n = _emit(events, n, EV_CANCEL, i, R_EXPIRED, np.nan, 0.0, 0.0, o["remaining"])
            continue
        otype = o["otype"]
        if (otype == STOP or otype == STOP_LIMIT) and not o["triggered"]:
            mode = cfg[C_STOP_MODE]
            if mode == STOP_ON_TRADE:
                px = trade
            elif mode == STOP_ON_MID:
                px = (bid + ask) / 2.0
            else:
                px = ask if buy else bid
            if not math.isnan(px) and not (math.isnan(o["trail"])
                                           and math.isnan(o["trail_pct"])):
                moved = trail_stop(o, px, tick)
                if moved and n + 3 <= cap:
                    n = _emit(events, n, EV_MOVED, i, 0, o["stop"], 0.0, 0.0, o["remaining"])
            if math.isnan(px) or (buy and px < o["stop"]) or (not buy and px > o["stop"]):
                continue
            o["triggered"] = True
            # A triggered stop arrives at the book now: its first match is as a taker.
            o["attempted"] = False
            n = _emit(events, n, EV_TRIGGER, i, 0, o["stop"] if touch else px, 0.0, 0.0,
                      o["remaining"])
        first = not o["attempted"]
        o["attempted"] = True
        is_market = otype == MARKET or otype == STOP
        if have_book:
            quote = ask if buy else bid
            avail = avail_ask if buy else avail_bid
        elif not math.isnan(trade):
            quote = trade
            avail = np.inf
        else:
            quote = np.nan
            avail = 0.0
        marketable = not math.isnan(quote) and avail > 0 and (
            is_market or (buy and quote <= o["limit"]) or (not buy and quote >= o["limit"]))
        if marketable and o["size"] == 0.0 and not math.isnan(o["frac"]):
            # Sized as a fraction of equity: resolved now, at the price it fills at.
            price = _fill_price(cfg, o, buy, is_market, touch, quote, tick, have_book, bid, ask)
            pct = cfg[C_FEE_TAKER_PCT] if (first or is_market) else cfg[C_FEE_MAKER_PCT]
            units, free = fraction_units(account, positions, marks, sym, 1.0 if buy else -1.0,
                                          price, cfg[C_FEE_PER_UNIT] + pct * price,
                                          cfg[C_FEE_FIXED], o["frac"], lev, lot)
            why = -1
            if units <= 0.0:
                why = R_NO_UNITS
            elif min_notional > 0.0 and units * price < min_notional * (1.0 - 1e-9):
                why = R_MIN_NOTIONAL
            if why >= 0:
                o["status"] = CANCELLED
                n = _emit(events, n, EV_CANCEL, i, why, price, units, 0.0, 0.0)
                events[n - 1]["equity"] = free
                n = drop_dormant(orders, i, events, n)
                continue
            o["size"] = units
            o["remaining"] = units
        size = o["remaining"]
        if marketable and o["reduce_only"]:
            pos = positions[sym, P_QTY]
            reducible = -pos if buy else pos
            if reducible <= 0:
                o["status"] = CANCELLED
                n = _emit(events, n, EV_CANCEL, i, R_REDUCE_ONLY, np.nan, 0.0, 0.0, size)
                continue
            size = min(size, reducible)
        fill = min(size, avail) if marketable else 0.0
        tif = o["tif"]
        if tif == FOK and first and fill < o["remaining"] - _EPS * o["remaining"]:
            o["status"] = CANCELLED
            n = _emit(events, n, EV_CANCEL, i, R_FOK, np.nan, 0.0, 0.0, o["remaining"])
            continue
        if fill > _EPS * o["size"]:  # a dust-sized displayed quantity is no liquidity
            price = _fill_price(cfg, o, buy, is_market, touch, quote, tick, have_book, bid, ask)
            liquidity = TAKER if (first or is_market) else MAKER
            shrunk = False
            if lev > 0.0:
                pct = cfg[C_FEE_MAKER_PCT] if liquidity == MAKER else cfg[C_FEE_TAKER_PCT]
                fixed = 0.0 if o["fee_charged"] else cfg[C_FEE_FIXED]
                side = 1.0 if buy else -1.0
                rate = cfg[C_FEE_PER_UNIT] + pct * price
                room = fill_room(account, positions, marks, sym, side, price, rate, fixed, lev)
                if not fits(fill, room):
                    if shrink and tif != FOK and room > _EPS * o["size"]:
                        fill = room
                        shrunk = True
                    else:
                        fee = rate * fill + fixed
                        eq, ex = after_fill(account, positions, marks, sym, side * fill, price,
                                            fee)
                        o["status"] = CANCELLED
                        n = _emit(events, n, EV_CANCEL, i, R_BUYING_POWER, price, fill, fee,
                                  o["remaining"])
                        events[n - 1]["equity"] = eq
                        events[n - 1]["exposure"] = ex
                        n = drop_dormant(orders, i, events, n)
                        continue
            fee = _fee(cfg, o, price, fill, liquidity)
            q0 = positions[sym, P_QTY]
            apply_fill(account, positions, sym, fill if buy else -fill, price, fee)
            o["remaining"] -= fill
            if o["remaining"] <= _EPS * o["size"]:
                o["remaining"] = 0.0
                o["status"] = FILLED
            n = _emit(events, n, EV_FILL, i, liquidity, price, fill, fee, o["remaining"])
            events[n - 1]["side"] = o["side"]
            linked = filled_links(orders, i, fill, price, q0, positions[sym, P_QTY], now, tick)
            if linked >= 0 and orders[linked]["status"] <= WORKING:
                # An OCO partner, or a bracket child with nothing left to protect, stops.
                orders[linked]["status"] = CANCELLED
                n = _emit(events, n, EV_CANCEL, linked, R_OCO, np.nan, 0.0, 0.0,
                          orders[linked]["remaining"])
            if positions[sym, P_QTY] == 0.0:
                n = cancel_protection(orders, start, n_orders, sym, R_FLAT, events, n)
            if shrunk and o["status"] == WORKING:
                # What is left would not fit either: it stops here, with the reason.
                o["status"] = CANCELLED
                n = _emit(events, n, EV_CANCEL, i, R_BUYING_POWER, price, o["remaining"], 0.0,
                          o["remaining"])
                events[n - 1]["equity"] = np.nan
                events[n - 1]["exposure"] = np.nan
            if o["status"] == WORKING and o["reduce_only"] and positions[sym, P_QTY] == 0.0:
                # A reduce-only order has nothing left to reduce once the position is flat.
                o["status"] = CANCELLED
                n = _emit(events, n, EV_CANCEL, i, R_REDUCE_ONLY, np.nan, 0.0, 0.0,
                          o["remaining"])
            if buy:
                avail_ask -= fill
            else:
                avail_bid -= fill
        if tif == IOC and first and o["status"] == WORKING:
            o["status"] = CANCELLED
            n = _emit(events, n, EV_CANCEL, i, R_IOC, np.nan, 0.0, 0.0, o["remaining"])
        elif tif == FOK and first and o["status"] == WORKING:
            # FOK that did not fill at once (not marketable) does not rest.
            o["status"] = CANCELLED
            n = _emit(events, n, EV_CANCEL, i, R_FOK, np.nan, 0.0, 0.0, o["remaining"])
        if o["status"] == CANCELLED and (o["sl_row"] >= 0 or o["tp_row"] >= 0):
            n = drop_dormant(orders, i, events, n)
    bounds[0] = first_working(orders, start, n_orders)
    return n


@njit(cache=True)
def match_point(orders, state, start, n_orders, sym, now, price, touch, cfg, tick, lot,
                min_notional, account, positions, marks, events, rows, m, fill_id, step):
    """`match_quote` at one point of a price path (bid, ask and trade at `price`) over order
    rows `start` to `n_orders`, for an account that logs its fills as rows: each fill goes to
    `rows[m]`, `rows[m + 1]`, ... (`fill_dtype`, tagged with `step`, numbered from
    `fill_id + 1`) and the order row of each to `state[2:]`; the other events stay in
    `events`, in their order. `state` is match_quote's `bounds` followed by room for as many
    order rows as `events` has; `rows` needs room for as many fills as `events` holds.
    Returns the number of other events and of fills, whether `events` filled up (orders are
    left to look at), the first row that may still work, and the order row of the first fill
    (-1: none)."""
    state[0] = start
    state[1] = n_orders
    n = match_quote(orders, state, sym, now, price, price, np.nan, np.nan, price, cfg, tick,
                    account, positions, marks, events, touch, lot, min_notional)
    other = 0
    fills = 0
    for e in range(n):
        ev = events[e]
        if ev["kind"] == EV_FILL:
            r = rows[m + fills]
            r["step"] = step
            r["time"] = now
            r["fill_id"] = fill_id + fills + 1
            r["sym"] = sym
            r["side"] = ev["side"]
            r["maker"] = ev["reason"] == MAKER
            r["price"] = ev["price"]
            r["size"] = ev["size"]
            r["fee"] = ev["fee"]
            r["remaining"] = ev["remaining"]
            state[2 + fills] = ev["order"]
            fills += 1
        else:
            if other != e:
                events[other] = events[e]
            other += 1
    return other, fills, n >= events.shape[0] - 2, state[0], state[2] if fills else -1


@njit(cache=True)
def _fill_price(cfg, o, buy, is_market, touch, quote, tick, have_book, bid, ask):
    """The price order `o` fills at against `quote` (see match_quote)."""
    if is_market:
        # On a path, a stop fills where the price crossed it, not at the next point.
        base = o["stop"] if (touch and o["otype"] == STOP) else quote
        slip = cfg[C_SLIP_TICKS] * tick + cfg[C_SLIP_PCT] * base
        if have_book:
            slip += cfg[C_SLIP_SPREAD] * (ask - bid)
        return base + slip if buy else base - slip
    if touch:
        return o["limit"]
    return min(o["limit"], quote) if buy else max(o["limit"], quote)


@njit(cache=True)
def fraction_units(account, positions, marks, sym, side, price, rate, fixed, frac, leverage,
                   lot):
    """The size (units) an order of `side` (+1 buy, -1 sell) in `sym` sized as `frac` of the
    equity available resolves to when it fills at `price`, paying `rate` currency per unit
    plus `fixed` once; and that equity available. backtesting.py's `buy(size=f)`:

        available = max(0, equity - gross exposure / leverage)
        units     = floor(frac x available / (price + fee per unit)), in whole `lot`s

    with `sym` valued at `price` and other symbols at `marks` (their entry price where NaN),
    `leverage` the account's cap (0: none, margin counted at 1x) and `lot` the size step (0:
    1 unit). `frac` runs up to the leverage (2 at 2x: all the buying power), where
    backtesting.py's fraction runs to 1 and is multiplied by it. The fixed fee comes off the
    budget once (backtesting.py spreads it over the fraction instead). Under a leverage cap
    the size never exceeds what the cap lets the fill add (`fill_room`)."""
    eq = account[A_CASH]
    gross = 0.0
    for s in range(positions.shape[0]):
        q = positions[s, P_QTY]
        if q != 0.0:
            m = price if s == sym else (marks[s] if not math.isnan(marks[s])
                                        else positions[s, P_AVG])
            eq += q * m
            gross += abs(q * m)
    lev = leverage if leverage > 0.0 else 1.0
    avail = max(0.0, eq - gross / lev)
    step = lot if lot > 0.0 else 1.0
    budget = avail * frac - fixed
    unit = (price + rate) * step
    if budget <= 0.0 or not unit > 0.0:
        return 0.0, avail
    n = budget // unit
    if (n + 1.0) * unit <= budget * (1.0 + 1e-12):  # an exact multiple lost to float noise
        n += 1.0
    if leverage > 0.0:
        room = fill_room(account, positions, marks, sym, side, price, rate, fixed, leverage)
        if n * step > room * (1.0 + 1e-12):
            n = math.floor(room / step + 1e-9)
    return n * step, avail


@njit(cache=True)
def round_tick(px, tick, up):
    """`px` on the price grid of `tick` (0: as is), rounded up or down."""
    if not tick > 0.0:
        return px
    n = math.ceil(px / tick - 1e-9) if up else math.floor(px / tick + 1e-9)
    return round(n * tick, 10)


@njit(cache=True)
def trail_stop(o, px, tick=0.0):
    """Ratchet a trailing stop toward price `px` (never away); whether it moved. The stop is
    kept on the `tick` grid, rounded away from the price (a sell stop down, a buy stop up)."""
    buy = o["side"] > 0
    if not math.isnan(o["trail"]):
        new = px + o["trail"] if buy else px - o["trail"]
    else:
        new = px * (1.0 + o["trail_pct"]) if buy else px * (1.0 - o["trail_pct"])
    new = round_tick(new, tick, buy)
    if math.isnan(o["stop"]) or (buy and new < o["stop"]) or (not buy and new > o["stop"]):
        o["stop"] = new
        return True
    return False


@njit(cache=True)
def _child_price(orders, c, avg, long, tick):
    """Price child `c` off its entry's average fill `avg` (for a `long` entry or a short), on
    the `tick` grid, rounded away from the entry (a take-profit never asks less than its
    percent, a stop never triggers sooner)."""
    ch = orders[c]
    if not math.isnan(ch["rel"]):
        up = (ch["otype"] == LIMIT) == long  # a long's take-profit and a short's stop sit above
        px = avg * (1.0 + ch["rel"]) if up else avg * (1.0 - ch["rel"])
        px = round_tick(px, tick, up)
        if ch["otype"] == LIMIT:
            ch["limit"] = px
        else:
            ch["stop"] = px
    elif not (math.isnan(ch["trail"]) and math.isnan(ch["trail_pct"])) and ch["status"] == DORMANT:
        ch["stop"] = np.nan
        trail_stop(ch, avg, tick)


@njit(cache=True)
def filled_links(orders, i, fill, price, q0, q1, now, tick=0.0):
    """What a fill of `fill` units of order `i` at `price` does to the orders linked to it,
    from position `q0` to `q1`: an entry's children grow by the part of the fill that grew the
    position its way (and wake up, priced off the average fill); a bracket child shrinks its
    sibling by the fill. Returns a linked row to cancel (-1: none). Ledger replays call it too,
    so a restored account has the same protection. `tick`: the price step (0: none)."""
    o = orders[i]
    o["filled_value"] += price * fill
    side = 1.0 if o["side"] > 0 else -1.0
    grew = max(0.0, q1 * side) - max(0.0, q0 * side)
    if grew > 0.0 and (o["sl_row"] >= 0 or o["tp_row"] >= 0):
        done = o["size"] - o["remaining"]
        avg = o["filled_value"] / done if done > 0 else price
        for c in (o["sl_row"], o["tp_row"]):
            if c < 0 or orders[c]["status"] > WORKING:
                continue
            _child_price(orders, c, avg, side > 0, tick)
            orders[c]["size"] += grew
            orders[c]["remaining"] += grew
            if orders[c]["status"] == DORMANT:
                orders[c]["status"] = PENDING
                orders[c]["active_at"] = now
    partner = o["oco"]
    if partner < 0:
        return -1
    if o["link"] == LINK_CANCEL:
        return partner
    p = orders[partner]
    if p["status"] <= WORKING and p["status"] != DORMANT:
        p["remaining"] = max(0.0, p["remaining"] - fill)
        if p["remaining"] <= _EPS * max(p["size"], 1.0):
            return partner
    return -1


@njit(cache=True)
def cancel_protection(orders, start, n_orders, sym, reason, events, n):
    """Cancel the protective children still working in `sym` (the position they protect is
    gone); returns the new event count."""
    cap = events.shape[0]
    for r in range(start, n_orders):
        c = orders[r]
        if c["sym"] == sym and c["parent"] >= 0 and c["status"] <= WORKING \
                and c["status"] != DORMANT and n < cap:
            c["status"] = CANCELLED
            n = _emit(events, n, EV_CANCEL, r, reason, np.nan, 0.0, 0.0, c["remaining"])
    return n


@njit(cache=True)
def drop_dormant(orders, i, events, n):
    """Cancel the children of entry `i` that never woke (it ended before filling)."""
    cap = events.shape[0]
    for c in (orders[i]["sl_row"], orders[i]["tp_row"]):
        if c >= 0 and orders[c]["status"] == DORMANT and n < cap:
            orders[c]["status"] = CANCELLED
            n = _emit(events, n, EV_CANCEL, c, R_PARENT, np.nan, 0.0, 0.0, 0.0)
    return n


@njit(cache=True)
def first_working(orders, start, n_orders):
    """The lowest row at or after `start` whose order may still work (n_orders if none)."""
    while start < n_orders and orders[start]["status"] > WORKING:
        start += 1
    return start


@njit(cache=True)
def place_order(orders, row, sym, side, otype, tif, size, limit, stop, now, latency, expire_at,
                reduce_only):
    """Write a new order into `orders[row]` (sizes in units, times in epoch s)."""
    o = orders[row]
    o["sym"] = sym
    o["side"] = side
    o["otype"] = otype
    o["tif"] = tif
    o["reduce_only"] = reduce_only
    o["status"] = PENDING
    o["triggered"] = False
    o["attempted"] = False
    o["fee_charged"] = False
    o["size"] = size
    o["remaining"] = size
    o["limit"] = limit
    o["stop"] = stop
    o["placed_at"] = now
    o["active_at"] = now + latency
    o["expire_at"] = expire_at
    o["sl_row"] = -1
    o["tp_row"] = -1
    o["parent"] = -1
    o["oco"] = -1
    o["link"] = LINK_NONE
    o["rel"] = np.nan
    o["trail"] = np.nan
    o["trail_pct"] = np.nan
    o["filled_value"] = 0.0
    o["frac"] = np.nan


@njit(cache=True)
def fill_room(account, positions, marks, sym, side, price, rate, fixed, leverage):
    """The largest size (units) a fill of `side` (+1 buy, -1 sell) in `sym` at `price` may have
    and keep gross exposure within `leverage` x equity after it, its fee (`rate` currency per
    unit plus `fixed` once) paid. `sym` is valued at `price`, other symbols at `marks` (their
    entry price where NaN). A fill that does not grow the position's size adds no exposure:
    against a position it may always close it and reopen as large on the other side.
    """
    q0 = positions[sym, P_QTY]
    eq = account[A_CASH] + q0 * price
    other = 0.0
    for s in range(positions.shape[0]):
        q = positions[s, P_QTY]
        if q != 0.0 and s != sym:
            m = marks[s] if not math.isnan(marks[s]) else positions[s, P_AVG]
            eq += q * m
            other += abs(q * m)
    # A fill f that grows the position leaves |q0 + side f| = f + side q0 units of `sym`:
    #   other + (f + side q0) price <= leverage (eq - fixed - rate f), solved for f.
    room = (leverage * (eq - fixed) - other - side * q0 * price) / (price + leverage * rate)
    if side * q0 < 0.0:
        room = max(room, 2.0 * abs(q0))
    return max(room, 0.0)


@njit(cache=True)
def fits(size, room):
    """Whether a fill of `size` units fits in `room` (from fill_room), up to rounding."""
    return size <= room * (1.0 + 1e-12)


@njit(cache=True)
def after_fill(account, positions, marks, sym, qty, price, fee):
    """(equity, gross exposure) after a fill of `qty` units (signed) of `sym` at `price` paying
    `fee`, with `sym` valued at `price` and other symbols at `marks`; the state is not changed."""
    q1 = positions[sym, P_QTY] + qty
    eq = account[A_CASH] - qty * price - fee + q1 * price
    ex = abs(q1 * price)
    for s in range(positions.shape[0]):
        q = positions[s, P_QTY]
        if q != 0.0 and s != sym:
            m = marks[s] if not math.isnan(marks[s]) else positions[s, P_AVG]
            eq += q * m
            ex += abs(q * m)
    return eq, ex


@njit(cache=True)
def gross_exposure(positions, marks):
    """Sum of |quantity x mark| over symbols (entry price where no mark is known)."""
    total = 0.0
    for s in range(positions.shape[0]):
        q = positions[s, P_QTY]
        if q != 0.0:
            m = marks[s] if not math.isnan(marks[s]) else positions[s, P_AVG]
            total += abs(q * m)
    return total


@njit(cache=True)
def equity(account, positions, marks):
    """Cash plus every position marked at `marks` (per symbol; NaN marks count as avg price)."""
    total = account[A_CASH]
    for s in range(positions.shape[0]):
        q = positions[s, P_QTY]
        if q != 0.0:
            m = marks[s] if not math.isnan(marks[s]) else positions[s, P_AVG]
            total += q * m
    return total
