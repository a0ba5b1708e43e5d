"""The dashboard's HTTP and websocket server: h11 and wsproto over trio streams, nothing else.

Every request needs the access token, as `?token=` in the URL or the cookie the page's first
response sets; anything without it gets 403, websocket upgrades included. The server listens on
loopback unless told otherwise with `allow_remote`, and even then only with the token. It never
logs the token.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

__all__ = ["Response", "WebSocket", "check_address", "new_token", "parse_address", "serve"]

log = logging.getLogger("engine.ui")

COOKIE = "engine_ui"
_MAX_HEAD = 64 * 1024


class UiAddressError(ValueError):
    """The dashboard's address is malformed, or not loopback without `allow_remote`."""


def new_token() -> str:
    """A random access token (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def parse_address(text: str) -> tuple[str, int]:
    """`PORT` or `HOST:PORT` (`[v6]:PORT` too) -> (host, port); host defaults to 127.0.0.1."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise UiAddressError(f"--ui {text!r}: expected [HOST:]PORT, e.g. 8050 or "
                             "127.0.0.1:8050") from None
    if not 0 <= number <= 65535:
        raise UiAddressError(f"--ui {text!r}: port must be 0..65535 (0: a free one)")
    return host or "127.0.0.1", number


def check_address(host: str, allow_remote: bool) -> None:
    """Refuse a host that is not loopback unless `allow_remote`."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise UiAddressError(f"the dashboard would listen on {host}, which other machines can "
                             "reach: pass --allow-remote to mean it (the token is still needed)")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        return cls(status, json.dumps(data, separators=(",", ":"), default=str).encode())


class WebSocket:
    """One accepted websocket: `send` JSON messages, `receive` the client's."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection) -> None:
        self._stream, self._ws = stream, ws
        self._lock = trio.Lock()
        self.closed = False

    async def send(self, message: Any) -> None:
        data = self._ws.send(TextMessage(json.dumps(message, separators=(",", ":"),
                                                    default=str)))
        async with self._lock:
            await self._stream.send_all(data)

    async def receive(self) -> Any:
        """The next message from the client (decoded JSON); None once it closed."""
        text: list[str] = []
        while True:
            for event in self._ws.events():
                if isinstance(event, TextMessage):
                    text.append(event.data)
                    if event.message_finished:
                        try:
                            return json.loads("".join(text))
                        except ValueError:
                            text = []
                elif isinstance(event, CloseConnection):
                    self.closed = True
                    async with self._lock:
                        try:
                            await self._stream.send_all(self._ws.send(event.response()))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                    return None
                elif isinstance(event, Ping):
                    async with self._lock:
                        await self._stream.send_all(self._ws.send(event.response()))
            data = await self._stream.receive_some(65536)
            if not data:
                self.closed = True
                return None
            self._ws.receive_data(data)


Handler = Callable[[str, dict[str, str]], Awaitable[Response]]
WsHandler = Callable[[str, dict[str, str], WebSocket], Awaitable[None]]


def _authorized(target: str, headers: dict[str, str], token: str) -> tuple[bool, bool]:
    """(allowed, by query): the token is in the query string or the cookie."""
    query = parse_qs(urlsplit(target).query)
    given = query.get("token", [""])[0]
    if given and secrets.compare_digest(given.encode(), token.encode()):
        return True, True
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and secrets.compare_digest(value.encode(), token.encode()):
            return True, False
    return False, False


async def _respond(stream: trio.abc.Stream, conn: h11.Connection, resp: Response,
                   extra: list[tuple[str, str]]) -> None:
    headers = [("content-type", resp.content_type), ("content-length", str(len(resp.body))),
               ("cache-control", "no-store"), ("x-content-type-options", "nosniff"),
               ("referrer-policy", "no-referrer"), *resp.headers, *extra]
    data = conn.send(h11.Response(status_code=resp.status, headers=headers))
    data += conn.send(h11.Data(data=resp.body)) if resp.body else b""
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _connection(stream: trio.SocketStream, token: str, handle: Handler,
                      handle_ws: WsHandler) -> None:
    conn = h11.Connection(h11.SERVER)
    raw = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                raw += data
                if len(raw) > _MAX_HEAD:
                    return
                conn.receive_data(data)
                continue
            if not isinstance(event, h11.Request):
                return
            target = event.target.decode("latin-1")
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            allowed, by_query = _authorized(target, headers, token)
            if headers.get("upgrade", "").lower() == "websocket":
                # A page of another site may not open it even in a browser holding the cookie.
                origin = headers.get("origin")
                if origin and urlsplit(origin).netloc != headers.get("host"):
                    allowed = False
                ws = WSConnection(ConnectionType.SERVER)
                ws.receive_data(raw)
                for wev in ws.events():
                    if isinstance(wev, Request):
                        if not allowed:
                            await stream.send_all(ws.send(RejectConnection(status_code=403)))
                            return
                        await stream.send_all(ws.send(AcceptConnection()))
                        await handle_ws(urlsplit(target).path, headers, WebSocket(stream, ws))
                        return
                return
            # Drain the (bodiless) request to its end before answering.
            while not isinstance(conn.next_event(), h11.EndOfMessage):
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            if event.method != b"GET":
                resp = Response(405, b"method not allowed", "text/plain")
            elif not allowed:
                resp = Response(403, b"forbidden: this dashboard needs its access token "
                                     b"(the URL printed when it started)", "text/plain")
            else:
                resp = await handle(target, headers)
            extra = []
            if by_query:
                # The page's own requests (scripts, data, websocket) carry the token as a cookie.
                extra.append(("set-cookie", f"{COOKIE}={token}; Path=/; HttpOnly; "
                                            "SameSite=Strict"))
            await _respond(stream, conn, resp, extra)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
            raw = b""
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def serve(host: str, port: int, token: str, handle: Handler, handle_ws: WsHandler,
                *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; `task_status.started(port)` gives the port bound."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)

    async def one(stream: trio.SocketStream) -> None:
        try:
            await _connection(stream, token, handle, handle_ws)
        except Exception:  # noqa: BLE001 - one bad request must not end the server
            log.exception("dashboard request failed")

    await trio.serve_listeners(one, listeners)
