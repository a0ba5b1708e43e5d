"""A provider for OHLCV history files the user already has: CSV, gzipped CSV and Parquet.

A symbol is a file: a path (`data/GOOG.csv`, `/x/eurusd.parquet`) or a bare name looked up as
`<data_dir>/<name>.csv|.csv.gz|.parquet` in any case (`goog` finds `GOOG.csv`). The file needs a
time column (an unnamed first column, or one named date, datetime, time or timestamp in any
case) and Open, High, Low, Close columns in any case; Volume is optional (0 when absent). Other
columns are ignored, "Adj Close" included, so prices are the file's unadjusted ones. A malformed
row raises `MalformedFileError` naming file, line and column (`GOOG.csv:17: column 'High': 'abc'
is not a number`), as do implausible values (engine.plausible: prices not finite, not
positive or at 1e12 and above; volume negative or not finite; times before 1970 or after the end
of next year), high < low, open or close outside low..high, and repeated or out-of-order times.

`backfill_bars` pushes the file's newest bars into shm. `stream_quotes` replays the bars as
trades (open, nearer extreme, farther extreme, close; a quarter of the volume each) at `speed`
times the bars' own pace, then sends one quote without ticks per file at the end of its last bar
and idles until cancelled. Quote times are the data's historic times, and the symbol info says
`"replay": True`, so the engine closes bars by them rather than by its clock.
A file has no trade counts or VWAP, so bars carry `count` = 0 (unknown) and `bar_wap` =
(open+high+low+close)/4, the VWAP of the four trades replay synthesizes for that bar: a backfilled
bar and the one the engine samples from its replay then agree, and it lies within low..high.

Options (`configure`, or `engine ... -o key=value`): `data_dir` (default $ENGINE_CSV_DIR, else the
current directory), `speed` (replay multiplier, default 1 = the bars' real pace; 3600 plays an
hour a second; 0 or "max" as fast as the receiver takes them), `timezone` of naive times (IANA
name or +HH:MM, default UTC). This module never reads the wall clock: pacing uses trio's clock.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from engine.datafiles import History, MalformedFileError, load
from engine.dtypes import ohlc_dtype
from engine.shm import ShmArray
from providers.csvfile._replay import first_quote, replay
from providers.csvfile._symbols import Options, SymbolNotFoundError, parse_options, resolve, search

__all__ = [
    "ohlc_dtype",
    "stream_quotes",
    "backfill_bars",
    "symbol_info",
    "search_symbols",
    "configure",
    "MalformedFileError",
    "SymbolNotFoundError",
    "FRAME_ROWS",
]

log = logging.getLogger(__name__)

FRAME_ROWS = 1000  # rows per backfill frame: `count` frames is at most count * 1000 bars

_options = Options()


def configure(**options: object) -> None:
    """Set provider options: data_dir, speed, timezone (strings or values; None resets one).

    Raise ValueError naming the option when a value is wrong or the option is unknown.
    """
    global _options
    _options = parse_options(_options, **options)


async def _load(path: Path, options: Options) -> History:
    # Parsing a large file takes a while: keep the event loop free, and stay cancellable.
    return await trio.to_thread.run_sync(load, path, options.timezone, abandon_on_cancel=True)


def _info(symbol: str, history: History) -> dict:
    bars = history.bars
    return {
        "symbol": symbol,
        "source": "csvfile",
        "path": str(history.path),
        "bars": len(bars),
        "first_time": int(bars["time"][0]),
        "last_time": int(bars["time"][-1]),
        "period": history.period,  # seconds, the median spacing of the bars
        "tick_size": history.tick_size,  # finest price step the file's decimals show, or None
        "lot_size": history.lot_size,  # same for volume
        # No trade stream exists in a bar file: replay's trades are synthesized from the bars.
        "synthetic_ticks": True,
        # Quote times are the data's: the engine closes bars by them, not by its clock.
        "replay": True,
    }


def symbol_info(symbol: str) -> dict:
    """Describe the file `symbol` names: path, bar count, time span (epoch s), period (s), steps."""
    return _info(symbol, load(resolve(symbol, _options), _options.timezone))


def search_symbols(pattern: str) -> list[str]:
    """List the bare names of the files in data_dir matching `pattern` (substring or glob)."""
    return search(pattern, _options)


async def stream_quotes(
    send_chan: trio.abc.SendChannel,
    symbols: list[str],
    shm: ShmArray,
    feed_is_live: trio.Event,
    loglevel: str | None = None,
    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Replay the bars of `symbols`' files as trade quotes, merged in time, until cancelled.

    Quotes are paced at `speed` data seconds per second of trio's clock. Raise before `started`
    when a symbol names no file or its file is malformed. `shm` is left to the engine.
    """
    if loglevel:
        try:
            log.setLevel(loglevel.upper())
        except ValueError:
            log.warning("ignoring unknown log level %r", loglevel)
    options = _options
    paths = [resolve(sym, options) for sym in symbols]
    histories = [await _load(path, options) for path in paths]
    streams = list(zip(symbols, histories, strict=True))
    init_msgs = {sym: _info(sym, history) for sym, history in streams}
    first_quotes = {sym: first_quote(sym, history) for sym, history in streams}
    task_status.started((init_msgs, first_quotes))
    log.info("replaying %s at speed %s", ", ".join(map(str, paths)), options.speed)
    feed_is_live.set()
    await replay(send_chan, streams, options.speed)
    log.info("replay of %s finished; idling until cancelled", ", ".join(symbols))
    await trio.sleep_forever()


async def backfill_bars(
    sym: str,
    shm: ShmArray,
    count: int = 10,
    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Push the newest `count` frames (1000 bars each) of `sym`'s file into `shm`, in time order.

    The newest frame goes in with `push`, older ones with `prepend`, each cut to the room left,
    keeping the newest bars. Bars already in `shm` stay: only older bars are prepended and newer
    ones pushed. Raise before `started` when `sym` names no file.
    """
    options = _options
    path = resolve(sym, options)
    with trio.CancelScope() as scope:
        task_status.started(scope)
        history = await _load(path, options)
        bars = history.bars[-count * FRAME_ROWS :] if count > 0 else history.bars[:0]
        if len(shm):
            have = shm.array["time"]
            newer = bars[bars["time"] > have[-1]]
            older = bars[bars["time"] < have[0]]
            # Pushed bars continue right after the last one held, so take the oldest that fit.
            if len(newer) and shm.room_after:
                shm.push(newer[: shm.room_after])
        else:
            k = min(FRAME_ROWS, len(bars), shm.room_after)
            older = bars[: len(bars) - k]
            if k:
                shm.push(bars[len(bars) - k :])
        while len(older) and shm.room_before:
            await trio.lowlevel.checkpoint()
            frame = older[-min(FRAME_ROWS, shm.room_before) :]
            shm.prepend(frame)
            older = older[: len(older) - len(frame)]
        log.debug("backfilled %s: %d rows held", sym, len(shm))
