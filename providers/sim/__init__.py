"""The embedded default provider: a seeded, simulated market that needs no network.

Each symbol's mid follows geometric Brownian motion with occasional jumps; a book with a spread of
at least one tick is quoted around it, and trades print at the bid or the ask. The path is a
function of (seed, symbol) alone: history ends at the anchor (the live start) exactly where the
live stream begins, and the same seed gives the same ticks. Time comes from trio's clock, so under
a MockClock the stream runs deterministically and as fast as the receiver drains it.

This provider never writes into the tick buffer it is given (the engine does) and never touches
the network.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from engine.clock import current_clock
from engine.dtypes import OHLC_FIELDS, ohlc_dtype

from . import _config
from ._live import WINDOWS, LiveSymbol
from ._symbols import SymbolNotFound, lookup, search

if TYPE_CHECKING:
    from engine.shm import ShmArray

__all__ = [
    "ohlc_dtype",
    "stream_quotes",
    "backfill_bars",
    "symbol_info",
    "search_symbols",
    "configure",
    "reset",
    "SymbolNotFound",
]

log = logging.getLogger(__name__)

# Ticks to gather per turn while the stream is behind the clock. Measured with
# benchmarks/feed.py: 50 keeps p99 latency near 200 us at 100k ticks/s and still moves 240k
# quotes/s flat out; 2000 halves the flat-out rate (big batches), 0 never catches up at 100k.
CATCH_UP_TICKS = 50
FRAME = 1000  # bars per backfill frame (1000 seconds)


def configure(**options: Any) -> dict[str, Any]:
    """Configure the simulated market and reset it; return the options in effect.

    Options (strings as from `-o key=value`, or native values); unset ones take their default,
    or for seed, tick_rate and start_time the ENGINE_SIM_SEED / _TICK_RATE / _START_TIME
    environment variable:
      seed            int >= 0, default 7
      tick_rate       trade + book ticks per second per symbol, > 0, default 300 ("100k" works)
      start_time      the anchor, epoch seconds or ISO 8601 (floored to a second); default: the
                      wall clock at first use. History ends and the live stream starts there.
      volatility      annualized log vol (fraction) for every symbol; default: each symbol's own
      jump_intensity  jumps per hour per symbol, default 1
      jump_size       std of a jump's log size (fraction); default 1 % of the annual vol
      max_msg_rate    most messages per second per symbol, >= 100 (0 or none: no cap, the
                      default, one message per event); above it, events share messages
    Raise ValueError naming the option on an unknown option or a bad value.
    """
    return _config.configure(options).describe()


def reset() -> None:
    """Forget the configuration and anchor; the next use configures from the environment."""
    _config.reset()


def symbol_info(symbol: str) -> dict[str, Any]:
    """Return `symbol`'s tick size and lot size (price and asset units), class and currency."""
    spec = lookup(symbol)
    return {
        "symbol": symbol,
        "name": spec.name,
        "description": spec.description,
        "asset_class": spec.asset_class,
        "currency": spec.currency,
        "tick_size": spec.tick,
        "lot_size": spec.lot,
        "provider": "sim",
        "has_trades": True,
        "writes_shm": False,  # ticks come as messages; the engine writes the tick buffer
    }


def search_symbols(pattern: str) -> list[str]:
    """Return the known symbols matching `pattern` (name or description, any case)."""
    return search(pattern)


async def stream_quotes(
    send_chan: trio.abc.SendChannel,
    symbols: list[str],
    shm: ShmArray,
    feed_is_live: trio.Event,
    loglevel: str | None = None,
    task_status: trio.TaskStatus[tuple[dict, dict]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Stream quote messages for `symbols` from the anchor on, paced by the engine clock.

    Every stream starts at the anchor, so two streams of one symbol show the same ticks at the
    same (epoch-second) times; a tick stamped t is sent once the engine clock reads t, in 1 ms
    batches, and ticks the clock has already passed go out at once. `shm` is left to the engine.
    """
    level = logging.getLevelName(loglevel.upper()) if loglevel else None
    if isinstance(level, int):  # tractor's own levels ("cancel", "runtime") are left alone
        log.setLevel(level)
    symbols = list(dict.fromkeys([symbols] if isinstance(symbols, str) else symbols))
    if not symbols:
        raise ValueError("sim stream_quotes needs at least one symbol")
    specs = [lookup(s) for s in symbols]
    market = _config.current()
    live = [LiveSymbol(market, spec, sym) for spec, sym in zip(specs, symbols, strict=True)]
    init_msgs = {sym: symbol_info(sym) for sym in symbols}
    first_quotes = {ls.symbol: ls.first_quote() for ls in live}
    anchor = market.anchor
    if market.config.start_time is None:
        # The anchor came from the engine clock: pace by it, so tick times are engine time.
        clock_now, sleep_until = current_clock().now, current_clock().sleep_until
    else:
        # An explicit start_time replays a session of its own, from this call on: its times are
        # not the engine clock's, so the engine closes bars by them (`replay`).
        origin = trio.current_time()
        for info in init_msgs.values():
            info["replay"] = True

        def clock_now() -> float:
            return anchor + trio.current_time() - origin

        async def sleep_until(epoch: float) -> None:
            await trio.sleep_until(origin + epoch - anchor)

    task_status.started((init_msgs, first_quotes))
    log.info(
        "sim: streaming %s at %g ticks/s each from %d (seed %d)",
        ", ".join(symbols),
        market.config.tick_rate,
        market.anchor,
        market.config.seed,
    )
    send_nowait = getattr(send_chan, "send_nowait", None)
    ticks_per_window = market.config.tick_rate * len(live) / WINDOWS
    catch_up = max(0, math.ceil(CATCH_UP_TICKS / ticks_per_window) - 1)
    j = 0
    while True:
        due = anchor + (j + 1) / WINDOWS
        now = clock_now()
        if due >= now:
            # The feed is live once the stream waits for the clock.
            feed_is_live.set()
            await sleep_until(due)
        else:
            # Behind the clock (a slow start, or a busy receiver): send the windows the clock
            # has passed, about CATCH_UP_TICKS ticks a turn (small batches move fastest through
            # the feed; one window a turn never catches up at low rates), within this second.
            behind = math.floor((now - anchor) * WINDOWS) - 1
            j = max(j, min(behind, j + catch_up, (j // WINDOWS + 1) * WINDOWS - 1))
            await trio.lowlevel.checkpoint()
        parts = [ls.take(j) for ls in live]
        parts = [part for part in parts if part[0]]
        if len(parts) == 1:
            msgs = parts[0][0]
        elif parts:
            # Interleave the symbols by event time.
            order = np.argsort(np.concatenate([t for _, t in parts]), kind="stable")
            every = [m for ms, _ in parts for m in ms]
            msgs = [every[i] for i in order.tolist()]
        else:
            msgs = []
        if send_nowait is None:
            for msg in msgs:
                await send_chan.send(msg)
        elif msgs:
            # Hand over without a checkpoint while the channel has room; block when it is full.
            for msg in msgs:
                try:
                    send_nowait(msg)
                except trio.WouldBlock:
                    await send_chan.send(msg)
            await trio.lowlevel.checkpoint()
        j = max(j + 1, min(ls.next_window() for ls in live))


async def backfill_bars(
    sym: str,
    shm: ShmArray,
    count: int = 10,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Write up to `count` frames of 1000 one-second bars before the anchor into `shm`.

    The newest frame is pushed and older ones prepended, so rows stay in time order; where the
    buffer already holds rows, only older history is prepended. Rows that do not fit are not
    written (the newest are kept).
    """
    spec = lookup(sym)
    if shm.dtype.names is None or not set(OHLC_FIELDS) <= set(shm.dtype.names):
        raise ValueError(f"sim backfill_bars needs an ohlc_dtype buffer, got {shm.dtype}")
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise ValueError(f"sim backfill_bars: count must be an int >= 0, got {count!r}")
    with trio.CancelScope() as scope:
        task_status.started(scope)
        history = _config.current().history(spec)
        held = shm.array
        before = int(held["time"][0]) if len(held) else None
        pushed = before is not None
        for j in range(int(count)):
            blocks = []
            for b in history.frame_blocks(j, FRAME):
                blocks.append(history.block_rows(b))
                await trio.lowlevel.checkpoint()  # a block is ~2 ms of work
            rows = np.concatenate(blocks)
            if before is not None:
                rows = rows[rows["time"] < before]
            if not pushed and len(rows):
                fit = rows[len(rows) - min(shm.room_after, len(rows)) :]
                if len(fit):
                    shm.push(fit)
                rows = rows[: len(rows) - len(fit)]
                pushed = True
            room = shm.room_before
            if len(rows) and room:
                shm.prepend(rows[max(0, len(rows) - room) :])
            if pushed and shm.room_before == 0:
                break
        log.debug("sim: backfilled %s with %d bars", sym, len(shm.array))
