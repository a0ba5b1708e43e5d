"""Helpers the venues' trading adapters share: exact decimal strings for sizes and prices, the
SymbolRules of an instrument, and a private websocket that is closed whatever happens. No keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import wrap_client_stream

from engine.clearing.venue_api import SymbolRules

from .http import default_ssl_context
from .instruments import Instrument

__all__ = ["step_str", "rules_of", "open_private_ws"]


def step_str(value: float, step: float) -> str:
    """`value` rounded to the nearest multiple of `step`, as a plain decimal string with the
    step's decimals ("0.00012000" style noise removed): what a venue's filter accepts."""
    if step <= 0:
        return format(Decimal(repr(value)).normalize(), "f")
    q = Decimal(repr(step)).normalize()
    n = (Decimal(repr(value)) / q).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    out = (n * q).quantize(q) if q.as_tuple().exponent < 0 else n * q
    return format(out, "f")


def rules_of(name: str, inst: Instrument) -> SymbolRules:
    """The filters of `inst`, under the engine's name for it."""
    return SymbolRules(symbol=name, base=inst.base, quote=inst.quote, tick_size=inst.tick_size,
                       lot_size=inst.lot_size, min_size=inst.min_size,
                       min_notional=inst.min_notional)


@asynccontextmanager
async def open_private_ws(url: str, connect_timeout: float) -> AsyncIterator[Any]:
    """A websocket to `url` whose socket is closed on every exit: opened and wrapped here, not
    through open_websocket_url (trio-websocket 0.12 leaves the socket of a connection the peer
    dropped unclosed; see providers/_net/stream.py). Raises OSError, trio.TooSlowError or
    trio_websocket's HandshakeError when it cannot connect."""
    parts = urlsplit(url)
    tls = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if port == (443 if tls else 80) else f"{host}:{port}"
    stream: trio.abc.Stream | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    if tls:
                        stream = await trio.open_ssl_over_tcp_stream(
                            host, port, ssl_context=default_ssl_context(), https_compatible=True)
                    else:
                        stream = await trio.open_tcp_stream(host, port)
                    ws = await wrap_client_stream(nursery, stream, host_header, resource,
                                                  max_message_size=1 << 22)
                yield ws
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)
