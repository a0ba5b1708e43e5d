"""The simulated market's numbers: a GBM-with-jumps mid, a quoted book around it, and trades.

Pure numerics: every function takes its random generator and parameters and returns arrays. No
trio, no clock, no module state, no I/O. Time is in seconds relative to the anchor (the start of
the live stream): history is negative seconds, the live stream non-negative ones.

The path is drawn in two layers. A coarse layer gives the log mid at each whole second (a
diffusion step plus, now and then, a jump). A fine layer places the second's events (Poisson
arrivals) on a Brownian bridge between those two ends, with the jump as a step at its own
instant, so the second-by-second path does not depend on how finely it is sampled.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# What a generator is drawn for; part of its seed so streams never overlap.
KIND_ANCHOR, KIND_HISTORY, KIND_LIVE = 0, 1, 2

P_TRADE = 0.4  # share of events that are trades; the rest only move the book
# Ticks per event: a trade event sends trade + bid + ask, a book event bid + ask.
TICKS_PER_EVENT = 2.0 + P_TRADE
SPREAD_WIDEN_P = 0.6  # extra spread in ticks is geometric(p) - 1: 0 at 60 %, mean 0.67
ANCHOR_SPREAD = 0.02  # std of the seeded log offset of the anchor price from the base price


class Params(NamedTuple):
    tick: float
    price_decimals: int
    lot: float
    size_decimals: int
    spread_ticks: int
    sigma: float  # log vol per second
    jump_prob: float  # chance of a jump in any one second
    jump_std: float  # std of a jump's log size
    event_rate: float  # events per second
    trade_lots: float  # mean trade size, in lots
    book_lots: float  # mean top-of-book size, in lots


class Steps(NamedTuple):
    diffusion: np.ndarray  # log mid change from the diffusion over each second
    jump: np.ndarray  # log jump in each second, 0.0 for none
    tau: np.ndarray  # where in the second the jump happens, fraction


class Events(NamedTuple):
    sec: np.ndarray  # second of the block (int64), nondecreasing
    u: np.ndarray  # offset in that second, [0, 1), increasing within a second
    bid: np.ndarray
    ask: np.ndarray
    bid_size: np.ndarray
    ask_size: np.ndarray
    trade: np.ndarray  # bool: the event is a trade
    price: np.ndarray  # trade price (the ask for a buyer, the bid for a seller)
    size: np.ndarray  # trade size
    n_true: np.ndarray  # per second: events the second really holds (>= those simulated)
    n_sim: np.ndarray  # per second: events simulated


def rng_for(seed: int, key: int, kind: int, block: int = 0) -> np.random.Generator:
    """Return the generator of one stream of draws; the same arguments give the same draws."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key, kind, block])))


def anchor_log_price(seed: int, key: int, base_price: float) -> float:
    """Return the log mid at the anchor: the base price moved by a seeded few percent."""
    z = rng_for(seed, key, KIND_ANCHOR).standard_normal()
    return math.log(base_price) + ANCHOR_SPREAD * float(z)


def draw_steps(rng: np.random.Generator, m: int, p: Params) -> Steps:
    """Draw the coarse layer for `m` seconds."""
    z = rng.standard_normal(m)
    has_jump = rng.random(m) < p.jump_prob
    jump_size = rng.standard_normal(m) * p.jump_std
    tau = rng.random(m)
    # -sigma^2/2 keeps the mid a martingale (GBM with no drift).
    diffusion = p.sigma * z - 0.5 * p.sigma * p.sigma
    return Steps(diffusion, np.where(has_jump, jump_size, 0.0), tau)


def draw_events(
    rng: np.random.Generator,
    x_edges: np.ndarray,
    steps: Steps,
    p: Params,
    cap: int | None = None,
) -> Events:
    """Draw the fine layer: the events of each second between log mids `x_edges[i]`, `[i+1]`.

    With `cap`, a second simulates at most `cap` events; `n_true` keeps how many it really has so
    the caller can scale volume and trade counts.
    """
    m = len(steps.tau)
    n_true = rng.poisson(p.event_rate, m).astype(np.int64)
    n = n_true if cap is None else np.minimum(n_true, cap)
    total = int(n.sum())
    sec = np.repeat(np.arange(m, dtype=np.int64), n)
    u = rng.random(total)
    u = u[np.lexsort((u, sec))]

    # Brownian motion at every event and at each second's end (u = 1), per second from 0.
    ends = np.cumsum(n + 1) - 1
    is_end = np.zeros(total + m, dtype=np.bool_)
    is_end[ends] = True
    pts = np.empty(total + m)
    pts[ends] = 1.0
    pts[~is_end] = u
    prev = np.empty_like(pts)
    prev[1:] = pts[:-1]
    prev[ends[:-1] + 1] = 0.0
    prev[0] = 0.0
    walk = np.cumsum(p.sigma * np.sqrt(pts - prev) * rng.standard_normal(total + m))
    start = np.zeros(m)
    start[1:] = walk[ends[:-1]]
    pts_sec = np.repeat(np.arange(m), n + 1)
    walk -= start[pts_sec]
    bridge = walk - pts * walk[ends][pts_sec]
    x = (
        x_edges[sec]
        + bridge[~is_end]
        + u * steps.diffusion[sec]
        + np.where(u >= steps.tau[sec], steps.jump[sec], 0.0)
    )

    mid_ticks = np.exp(x) / p.tick
    spread = p.spread_ticks + rng.geometric(SPREAD_WIDEN_P, total) - 1
    bid_ticks = np.maximum(np.floor(mid_ticks - spread / 2 + 0.5), 1.0)
    bid = np.round(bid_ticks * p.tick, p.price_decimals)
    ask = np.round((bid_ticks + spread) * p.tick, p.price_decimals)
    bid_size = _lots(p.book_lots * rng.lognormal(-0.28, 0.75, total), p)
    ask_size = _lots(p.book_lots * rng.lognormal(-0.28, 0.75, total), p)
    trade = rng.random(total) < P_TRADE
    buy = rng.random(total) < 0.5
    # lognormal(-0.5, 1) has mean 1.
    size = _lots(p.trade_lots * rng.lognormal(-0.5, 1.0, total), p)
    price = np.where(buy, ask, bid)
    return Events(sec, u, bid, ask, bid_size, ask_size, trade, price, size, n_true, n)


def _lots(x: np.ndarray, p: Params) -> np.ndarray:
    return np.round(np.maximum(np.round(x), 1.0) * p.lot, p.size_decimals)


def carry_last(trade: np.ndarray, price: np.ndarray, carry: float) -> np.ndarray:
    """Return the last trade price at each event, `carry` before the first trade."""
    idx = np.where(trade, np.arange(len(trade)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, price[np.maximum(idx, 0)], carry)


def round_to_tick(x: np.ndarray, p: Params) -> np.ndarray:
    return np.round(np.round(x / p.tick) * p.tick, p.price_decimals)


def bars_from_trades(ev: Events, m: int) -> tuple[np.ndarray, ...]:
    """Aggregate trades into one OHLCV bar per second; a second with no trade gets NaN prices.

    Volume and count are scaled by n_true / n_sim where a second simulated fewer events than it
    holds. Return (open, high, low, close, volume, count, wap).
    """
    sec, px, size = ev.sec[ev.trade], ev.price[ev.trade], ev.size[ev.trade]
    count = np.bincount(sec, minlength=m)
    volume = np.bincount(sec, weights=size, minlength=m)
    notional = np.bincount(sec, weights=px * size, minlength=m)
    open_, high, low, close, wap = (np.full(m, np.nan) for _ in range(5))
    has = count > 0
    if has.any():
        ends = np.cumsum(count)
        starts = (ends - count)[has]
        open_[has] = px[starts]
        close[has] = px[ends[has] - 1]
        high[has] = np.maximum.reduceat(px, starts)
        low[has] = np.minimum.reduceat(px, starts)
        wap[has] = np.clip(notional[has] / volume[has], low[has], high[has])
        scale = ev.n_true[has] / ev.n_sim[has]
        volume[has] *= scale
        count[has] = np.round(count[has] * scale)
    return open_, high, low, close, volume, count.astype(np.int64), wap


def fill_quiet_bars(bars: tuple[np.ndarray, ...], carry: float) -> None:
    """Make each bar with no trade flat at the previous close, in place.

    `bars` is (open, high, low, close, wap); `carry` is the close before the first bar.
    """
    close = bars[3]
    quiet = np.isnan(close)
    if not quiet.any():
        return
    idx = np.where(quiet, -1, np.arange(len(close)))
    np.maximum.accumulate(idx, out=idx)
    flat = np.where(idx >= 0, close[np.maximum(idx, 0)], carry)[quiet]
    for field in bars:
        field[quiet] = flat
