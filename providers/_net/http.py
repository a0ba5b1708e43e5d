"""A small trio-native HTTP/1.1 GET client for venue REST APIs: h11 over trio's TCP/TLS streams.

Why this and not httpx: trio is pinned at 0.23.2 (tractor needs it). httpx depends on anyio, and
anyio's current release (4.16) declares trio >= 0.32 for its trio support, so the async client
would run on an untested pairing (and anyio's pytest plugin would join every test run). httpx's
sync client in `trio.to_thread.run_sync` cannot be cancelled (an abandoned thread keeps its
socket until its own timeout), which breaks the spec's "cancellation ends it promptly, no leaked
sockets". h11 is the HTTP/1.1 state machine httpcore itself uses, it comes with trio-websocket
anyway (through wsproto), and over trio's streams every request is cancellable at once and
timed by trio's clock. The client keeps one connection alive per base URL, asks for gzip, and
retries network failures and 5xx answers with backoff; rate limits are the `RateLimiter`'s.

Nothing here knows a venue's endpoints or formats.
"""

from __future__ import annotations

import gzip
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import h11
import trio

from .backoff import Backoff
from .errors import UNFORESEEN, HttpStatusError, RateLimited, VenueError, VenueUnreachable, describe
from .limits import RateLimiter, RetryAfter

__all__ = ["HttpClient", "Response", "RequestLost", "default_ssl_context"]

log = logging.getLogger("providers.net")

MAX_BODY = 64 << 20  # Binance's full exchangeInfo is a few MB; anything near this is wrong.
USER_AGENT = "engine-market-data/0.1 (+h11; trio)"
# How many rate-limit answers in a row one request waits out before giving up.
MAX_RATE_LIMIT_RETRIES = 6

_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                   h11.RemoteProtocolError, trio.TooSlowError)

_ssl_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """Return a verifying TLS context with certifi's CA bundle (the same on every platform)."""
    global _ssl_context
    if _ssl_context is None:
        import certifi

        _ssl_context = ssl.create_default_context(cafile=certifi.where())
    return _ssl_context


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def text(self, limit: int = 300) -> str:
        return self.body[:limit].decode("utf-8", "replace")


class RequestLost(VenueUnreachable):
    """A request may have reached the venue but its answer did not come back (the connection
    broke or timed out after the request was written): its effect is unknown."""


class _Conn:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.used = False


class HttpClient:
    """GET JSON from one venue's REST base URL (an async context manager; closes its socket)."""

    def __init__(self, base_url: str, *, venue: str, limiter: RateLimiter | None = None,
                 timeout: float = 10.0, attempts: int = 3,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{venue}: REST base URL must be http(s)://host[:port][/path], "
                             f"got {base_url!r}")
        self.venue = venue
        self.base_url = base_url.rstrip("/")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        default_port = 443 if self.tls else 80
        self.host_header = self.host if self.port == default_port else f"{self.host}:{self.port}"
        self.limiter = limiter or RateLimiter(venue)
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self._ssl = ssl_context
        self._conn: _Conn | None = None
        self._lock = trio.Lock()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.aclose_forcefully(conn.stream)

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        return self.base_url + path + (f"?{urlencode(params)}" if params else "")

    async def get_json(self, path: str, params: dict[str, Any] | None = None, *, weight: int = 1,
                       check: Callable[[Any], None] | None = None) -> Any:
        """GET `path` with `params` and return the decoded JSON.

        `weight` is the request's cost in the venue's weight budget; `check(payload)` may raise
        `RetryAfter` for a rate limit the venue reports in the body (Kraken does, with HTTP 200).
        Raise VenueUnreachable, HttpStatusError or RateLimited (all VenueError) on failure.
        """
        target = self.prefix + path + (f"?{urlencode(params)}" if params else "")
        url = self.url(path, params)
        backoff = Backoff(0.5, 4.0)
        failures = 0
        limited = 0
        while True:
            await self.limiter.acquire(weight)
            try:
                resp = await self._get(target)
            except _NETWORK_ERRORS as exc:
                failures += 1
                if failures >= self.attempts:
                    raise VenueUnreachable(f"{self.venue}: cannot reach {self.base_url} "
                                           f"(GET {path}): {_describe(exc)}") from None
                delay = backoff.next()
                log.info("%s: GET %s failed (%s); retrying in %.1f s", self.venue, path,
                         _describe(exc), delay)
                await trio.sleep(delay)
                continue
            wait = self.limiter.observe(resp.status, resp.headers)
            if wait is not None:
                limited += 1
                if limited > MAX_RATE_LIMIT_RETRIES:
                    raise RateLimited(f"{self.venue}: still rate-limited after "
                                      f"{MAX_RATE_LIMIT_RETRIES} waits (GET {path})")
                continue
            if resp.status >= 500:
                failures += 1
                if failures >= self.attempts:
                    raise HttpStatusError(self.venue, url, resp.status, _message(resp))
                await trio.sleep(backoff.next())
                continue
            if resp.status != 200:
                raise HttpStatusError(self.venue, url, resp.status, _message(resp))
            try:
                payload = json.loads(resp.body)
            except (ValueError, RecursionError) as exc:
                # RecursionError: nesting deeper than the interpreter's stack.
                raise VenueError(f"{self.venue}: GET {url} answered with invalid JSON "
                                 f"({describe(exc, 80)}): {resp.text(120)!r}") from None
            if check is not None:
                try:
                    check(payload)
                except RetryAfter as exc:
                    limited += 1
                    if limited > MAX_RATE_LIMIT_RETRIES:
                        raise RateLimited(f"{self.venue}: still rate-limited after "
                                          f"{MAX_RATE_LIMIT_RETRIES} waits: {exc.reason}") from None
                    self.limiter.block(exc.seconds, f"said {exc.reason!r}")
                    continue
            self.limiter.succeeded()
            return payload

    async def send(self, method: str, path: str, *, query: str = "", body: bytes = b"",
                   headers: tuple[tuple[str, str], ...] = (), weight: int = 1) -> Response:
        """Send one request, exactly once, and return the answer whatever its status (after
        the rate limiter has seen it: a 429/418 blocks later requests for its Retry-After).

        `query` and `body` are sent exactly as given (a signature covers their bytes). Raise
        VenueUnreachable when no connection could be opened (nothing was sent), RequestLost
        when the request was written but no whole answer came back, RateLimited when the
        venue asks to wait longer than the limiter's maximum.
        """
        target = self.prefix + path + (f"?{query}" if query else "")
        await self.limiter.acquire(weight)
        async with self._lock:
            try:
                with trio.fail_after(self.timeout):
                    conn = self._conn
                    if conn is None:
                        conn = self._conn = await self._connect()
            except _NETWORK_ERRORS as exc:
                raise VenueUnreachable(f"{self.venue}: cannot reach {self.base_url} "
                                       f"({method} {path}): {_describe(exc)}") from None
            try:
                with trio.fail_after(self.timeout):
                    resp = await self._exchange(conn, target, method, body, headers)
            except _NETWORK_ERRORS as exc:
                raise RequestLost(f"{self.venue}: {method} {path}: no answer "
                                  f"({_describe(exc)})") from None
        self.limiter.observe(resp.status, resp.headers)
        if resp.status < 400:
            self.limiter.succeeded()
        return resp

    async def _get(self, target: str) -> Response:
        async with self._lock:
            with trio.fail_after(self.timeout):
                conn = self._conn
                if conn is not None and conn.used:
                    try:
                        return await self._exchange(conn, target)
                    except _NETWORK_ERRORS:
                        # A kept-alive connection the server closed while idle: one fresh try.
                        await self.aclose()
                conn = self._conn = await self._connect()
                return await self._exchange(conn, target)

    async def _connect(self) -> _Conn:
        if self.tls:
            stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                self.host, self.port, ssl_context=self._ssl or default_ssl_context(),
                https_compatible=True)
        else:
            stream = await trio.open_tcp_stream(self.host, self.port)
        return _Conn(stream)

    async def _exchange(self, conn: _Conn, target: str, method: str = "GET", body: bytes = b"",
                        extra: tuple[tuple[str, str], ...] = ()) -> Response:
        h = conn.h11
        try:
            headers = [("Host", self.host_header), ("User-Agent", USER_AGENT),
                       ("Accept", "application/json"), ("Accept-Encoding", "gzip"), *extra]
            if body or method in ("POST", "PUT"):
                headers.append(("Content-Length", str(len(body))))
            request = h11.Request(method=method, target=target, headers=headers)
            data = h.send(request)
            if body:
                data += h.send(h11.Data(data=body))
            await conn.stream.send_all(data + h.send(h11.EndOfMessage()))
            head: h11.Response | None = None
            chunks: list[bytes] = []
            size = 0
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    h.receive_data(await conn.stream.receive_some(1 << 16))
                elif isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_BODY:
                        raise h11.RemoteProtocolError(f"response body over {MAX_BODY} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("connection closed before the response ended")
        except BaseException:
            self._conn = None
            await trio.aclose_forcefully(conn.stream)
            raise
        assert head is not None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        body = b"".join(chunks)
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as exc:
                raise h11.RemoteProtocolError(f"bad gzip body: {exc}") from None
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            conn.used = True
        else:
            self._conn = None
            await trio.aclose_forcefully(conn.stream)
        return Response(head.status_code, headers, body)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _message(resp: Response) -> str:
    """The venue's own error text: Binance {"code", "msg"}, Kraken {"error": [...]}, or raw
    (at most 300 characters, whatever the body holds)."""
    try:
        payload = json.loads(resp.body)
        if isinstance(payload, dict):
            if "msg" in payload:
                code = payload.get("code")
                text = f"{payload['msg']}" + (f" (code {code})" if code is not None else "")
                return text[:300]
            if payload.get("error"):
                err = payload["error"]
                text = ", ".join(map(str, err)) if isinstance(err, list) else str(err)
                return text[:300]
    except UNFORESEEN:
        pass  # not JSON, or JSON too odd to print: show the raw start of the body
    return resp.text(200) or "(empty body)"
