"""Binance spot market data: public trades and top of book live, 1-minute klines as history.

No account or API key is needed. Live: the websocket `<symbol>@trade` (every print; `aggTrade`
with `-o trade_stream=aggTrade`) and `<symbol>@bookTicker` streams, combined on one connection,
normalized to `trade`, `bid`/`ask` (and `bsize`/`asize`) ticks with sizes and Binance's trade
times. First quotes come from REST `ticker/bookTicker` and the latest `aggTrades`. History:
REST `klines`, paged backwards 1000 bars a frame; the still-forming kline (close time not before
Binance's server time) is left out, so history holds closed bars only, and `bar_wap` is the
kline's quote volume / volume. Bookticker frames carry no exchange time: their quotes have none
and the engine stamps them on arrival.

Resilience is the shared `providers._net` stream: jittered exponential reconnects, a stale
stream (no message for `stale_after` s) is reconnected, subscriptions are renewed, and the
trades missed meanwhile are replayed from REST `aggTrades` (by aggregate id, or from the last
trade's time), deduplicated by trade id, before live quotes resume; see its docstring for the
feed_status messages. REST requests respect the documented weights against the minute budget
from exchangeInfo (tracked from the X-MBX-USED-WEIGHT-1M header) and wait out 429/418 answers
for their Retry-After; a ban longer than `max_retry_wait` fails instead of hanging.

Clients, and why: websockets through trio-websocket (trio-native, answers Binance's pings by
itself, cancellable). HTTP through a small h11 client over trio streams (providers/_net/http.py):
httpx's async client would need anyio, whose current release wants a newer trio than the 0.23.2
the engine pins for tractor, and its sync client in a worker thread cannot be cancelled
promptly. certifi supplies the CA bundle for TLS.

Symbols: `btcusdt`, `BTCUSDT` or `btc/usdt`; messages echo the symbol exactly as requested.
Order entry: `open_trading(...)` (see its docstring and the README's "Going live") signs
requests with the account's HMAC or Ed25519 key and follows the account's orders on the
WebSocket API user data stream; `TESTNET` holds the spot testnet's endpoints.

Options (`-o name=value`): rest_url, ws_url (also ENGINE_BINANCE_REST_URL / _WS_URL),
ws_api_url (ENGINE_BINANCE_WS_API_URL), recv_window,
stale_after, connect_timeout, close_timeout, request_timeout, reconnect_min, reconnect_max,
max_gap, max_retry_wait, jitter_seed, trade_stream, bar_interval. This provider never writes the
tick buffer it is given and never reads the wall clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from engine.dtypes import ohlc_dtype
from providers._net import UnknownSymbol, VenueError, VenueProvider

from ._venue import BinanceVenue

if TYPE_CHECKING:
    from engine.shm import ShmArray

__all__ = ["ohlc_dtype", "stream_quotes", "backfill_bars", "symbol_info", "search_symbols",
           "configure", "reset", "open_trading", "TESTNET", "UnknownSymbol", "VenueError"]

# The spot testnet (testnet.binance.vision): its own keys, its own (thin) market.
TESTNET = {"rest_url": "https://testnet.binance.vision",
           "ws_url": "wss://stream.testnet.binance.vision",
           "ws_api_url": "wss://ws-api.testnet.binance.vision/ws-api/v3"}

_provider = VenueProvider(BinanceVenue)


def configure(**options: Any) -> dict[str, Any]:
    """Set options (strings as from `-o name=value`, or values) and forget cached exchange info;
    return the options in effect. Raise ValueError naming a bad or unknown option."""
    return _provider.configure(options)


def reset() -> None:
    """Forget options and caches; the next use configures from the environment."""
    _provider.reset()


def symbol_info(symbol: str) -> dict[str, Any]:
    """Return `symbol`'s tick size (quote currency), lot and minimum size (base units), minimum
    notional (quote currency), base, quote and status, from exchangeInfo."""
    return _provider.symbol_info(symbol)


def search_symbols(pattern: str) -> list[str]:
    """Return the trading symbols matching `pattern` (substring or glob, any case)."""
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
    """Write up to `count` frames of 1000 closed klines (`bar_interval`, default 1 minute)
    before now into `shm`: the newest pushed, older ones prepended, never past its bounds."""
    await _provider.backfill_bars(sym, shm, count, task_status)


@asynccontextmanager
async def open_trading(symbols: list[str], *, now: Callable[[], float], keys: Any = None,
                       keys_file: str | None = None) -> AsyncIterator[Any]:
    """Open a signed trading session on the configured endpoints for `symbols`.

    `now` is the engine clock (epoch seconds) that timestamps requests; `keys` an ApiKeys, or
    they are loaded from `keys_file` / the environment (providers._net.keys). The session
    shares this provider's rate limiter, so market data and orders spend one weight budget.
    Raise KeysError without keys, UnknownSymbol for a pair Binance does not trade.
    """
    from providers._net.keys import load_keys

    from ._sign import Signer
    from ._trade import BinanceTrading

    signer = Signer(keys if keys is not None else load_keys("binance", keys_file))
    options = _provider.venue.options
    async with _provider.http() as http:
        table = await _provider.instruments(http)
        session = BinanceTrading(http, table, list(symbols), signer, options["ws_api_url"], now,
                                 recv_window_ms=int(options["recv_window"]),
                                 connect_timeout=options["connect_timeout"])
        yield session
