"""Kraken spot market data: public trades and top of book live, 1-minute OHLC as history.

No account or API key is needed. Live: websocket v2 (`wss://ws.kraken.com/v2`) channels `trade`
(every print, with Kraken's trade ids and times) and `ticker` with `event_trigger: "bbo"` (an
update on every change of the best bid or offer), normalized to `trade`, `bid`/`ask` (and
`bsize`/`asize`) ticks with sizes. First quotes come from REST `Ticker` and the latest
`Trades`. History: REST `OHLC`, whose bars carry Kraken's own vwap as `bar_wap`; its last,
not-yet-committed bar is left out. Kraken serves only the 720 most recent bars of an interval
("older data cannot be retrieved, regardless of the value of since"), so `backfill_bars` writes
one frame of at most 719 closed bars whatever `count` asks, and cannot page further back.

Resilience is the shared `providers._net` stream: jittered exponential reconnects, a stale
stream (no message, not even Kraken's one-a-second heartbeat, for `stale_after` s) is
reconnected, subscriptions are renewed, and the trades missed meanwhile are replayed from REST
`Trades` (`since` the last delivered trade, paged by Kraken's `last` cursor), deduplicated by
trade id, before live quotes resume; see its docstring for the feed_status messages. REST calls
are paced to `request_rate` per second (bursts of 3); Kraken's "Too many requests" answers (HTTP
200 with an error, or 429) wait and retry, up to `max_retry_wait`.

Clients, and why: websockets through trio-websocket (trio-native, cancellable). HTTP through a
small h11 client over trio streams (providers/_net/http.py): httpx's async client would need
anyio, whose current release wants a newer trio than the 0.23.2 the engine pins for tractor, and
its sync client in a worker thread cannot be cancelled promptly. certifi supplies the CA bundle.

Order entry: `open_trading(...)` (see its docstring and the README's "Going live") signs
private REST requests with the account's key (`API-Sign`, strictly increasing nonces) and follows
the account's orders on the websocket v2 `executions` channel. Kraken has no spot test network.

Symbols: `btcusd`, `xbtusd`, `btc/usd`, `XBT/USD` or `XXBTZUSD` all name Kraken's BTC/USD (v2
calls XBT "BTC" and XDG "DOGE"); messages echo the symbol exactly as requested. Options
(`-o name=value`): rest_url, ws_url (also ENGINE_KRAKEN_REST_URL / _WS_URL), stale_after,
connect_timeout, close_timeout, request_timeout, reconnect_min, reconnect_max, max_gap,
max_retry_wait, jitter_seed, request_rate, bar_interval (minutes); for order entry ws_auth_url
(ENGINE_KRAKEN_WS_AUTH_URL), order_deadline, private_rate, private_burst, order_rate,
order_burst. This provider never writes
the tick buffer it is given and never reads the wall clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from engine.dtypes import ohlc_dtype
from providers._net import UnknownSymbol, VenueError, VenueProvider

from ._venue import KrakenVenue

if TYPE_CHECKING:
    from engine.shm import ShmArray

__all__ = ["ohlc_dtype", "stream_quotes", "backfill_bars", "symbol_info", "search_symbols",
           "configure", "reset", "open_trading", "UnknownSymbol", "VenueError"]

_provider = VenueProvider(KrakenVenue)


def configure(**options: Any) -> dict[str, Any]:
    """Set options (strings as from `-o name=value`, or values) and forget cached asset pairs;
    return the options in effect. Raise ValueError naming a bad or unknown option."""
    return _provider.configure(options)


def reset() -> None:
    """Forget options and caches; the next use configures from the environment."""
    _provider.reset()


def symbol_info(symbol: str) -> dict[str, Any]:
    """Return `symbol`'s tick size (quote currency), lot and minimum size (base units), minimum
    order cost (quote currency), base, quote and status, from AssetPairs."""
    return _provider.symbol_info(symbol)


def search_symbols(pattern: str) -> list[str]:
    """Return the listed pairs matching `pattern` (substring or glob, any case), as v2 names
    in engine spelling ("btcusd")."""
    return _provider.search_symbols(pattern)


async def stream_quotes(
    send_chan: trio.abc.SendChannel,
    symbols: list[str],
    shm: ShmArray,
    feed_is_live: trio.Event,
    loglevel: str | None = None,
    task_status: trio.TaskStatus[tuple[dict, dict]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Stream trades and top of book for `symbols` until cancelled, reconnecting as needed.

    Unknown symbols raise UnknownSymbol (with close matches) before `started`. `shm` is left to
    the engine.
    """
    await _provider.stream_quotes(send_chan, symbols, feed_is_live, loglevel, task_status)


async def backfill_bars(
    sym: str,
    shm: ShmArray,
    count: int = 10,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Write Kraken's most recent closed bars (`bar_interval`, default 1 minute; at most 719)
    into `shm`, newest pushed, never past its bounds. `count` is accepted for the spec, but
    Kraken has no older history to page through."""
    await _provider.backfill_bars(sym, shm, count, task_status)


@asynccontextmanager
async def open_trading(symbols: list[str], *, now: Callable[[], float], keys: Any = None,
                       keys_file: str | None = None) -> AsyncIterator[Any]:
    """Open a signed trading session on the configured endpoints for `symbols`.

    `now` is the engine clock (epoch seconds) that makes nonces and order deadlines; `keys` an
    ApiKeys, or they are loaded from `keys_file` / the environment (providers._net.keys).
    Public calls share this provider's pacing with the market data; private calls keep to
    the account's REST and trading counters. Raise KeysError without keys (or with a secret
    that is not base64), UnknownSymbol for a pair Kraken does not list.
    """
    from providers._net import HttpClient, RateLimiter
    from providers._net.keys import load_keys

    from ._sign import Signer
    from ._trade import KrakenTrading

    signer = Signer(keys if keys is not None else load_keys("kraken", keys_file))
    o = _provider.venue.options
    private = HttpClient(o["rest_url"], venue="kraken", timeout=o["request_timeout"],
                         limiter=RateLimiter("kraken", max_wait=o["max_retry_wait"]))
    async with _provider.http() as http, private:
        table = await _provider.instruments(http)
        yield KrakenTrading(http, private, table, list(symbols), signer, o["ws_auth_url"], now,
                            deadline=o["order_deadline"], private_rate=o["private_rate"],
                            private_burst=int(o["private_burst"]), order_rate=o["order_rate"],
                            order_burst=int(o["order_burst"]),
                            connect_timeout=o["connect_timeout"], stale_after=o["stale_after"])
