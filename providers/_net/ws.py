"""Opening a venue's websocket (public streams and private ones alike) so that its socket is
closed on every exit. Only the connection lives here: what flows over it is the caller's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import wrap_client_stream

from .http import default_ssl_context

__all__ = ["open_ws"]


@asynccontextmanager
async def open_ws(url: str, connect_timeout: float, max_message_size: int = 1 << 22
                  ) -> AsyncIterator[Any]:
    """A websocket to `url` whose socket is closed on every exit: opened and wrapped here, not
    through open_websocket_url (trio-websocket 0.12 leaves the socket of a connection the peer
    dropped unclosed, until garbage collection). Messages up to `max_message_size` bytes.
    Raises OSError, trio.TooSlowError or trio_websocket's HandshakeError when it cannot
    connect."""
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
                                                  max_message_size=max_message_size)
                yield ws
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)
