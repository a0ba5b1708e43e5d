"""Authenticated links between the actors of a sweep: a shared secret, proven both ways.

tractor 0.1.0a5 has no authentication: whoever reaches an actor's port may call any function of
its enabled modules and any method of the actor itself (a sweep host would write and import the
source it is sent). Inside `keyed(key)`, every tractor connection this process opens or accepts
starts with an HMAC-SHA256 challenge-response, both ways, over fresh nonces, before tractor's
own handshake: a peer that cannot prove the key is refused (and logged), before any message of
it is read. After the handshake every byte travels in frames tagged with a per-direction
session key and a sequence number, so a peer on the network path can neither inject, replay
nor reorder messages. The link is not encrypted: strategy source and history are readable on
the wire (see the README for crossing untrusted networks).

Worker actors spawned under `keyed` boot through this module (`python -m
engine.actors.sweep_auth`, which then runs tractor's own child entry): they install the same
check before their first connection. The key reaches them in their environment, never on a
command line; this module never logs, raises or returns the secret or the key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import struct
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from engine.actors._runtime import tractor
from engine.paths import PrivateFileError, read_private_file

__all__ = ["SecretError", "AuthError", "load_secret", "derive_key", "new_key", "keyed",
           "is_authenticated", "DEFAULT_SECRET_ENV", "MIN_SECRET"]

log = logging.getLogger("engine.actors.sweep")

# The environment variable read for the shared secret when no other source is named.
DEFAULT_SECRET_ENV = "ENGINE_SWEEP_SECRET"
# Shortest secret accepted, in bytes: 128 bits of a random hex or base64 string.
MIN_SECRET = 16
# Where a spawned worker finds the derived key (hex); removed from its environment at once.
_CHILD_ENV = "_ENGINE_SWEEP_KEY"
_MAGIC = b"ENGSWP01"
_NONCE = 32
_TAG = 32
# A peer has this long (seconds) to complete the handshake before it is dropped.
HANDSHAKE_TIMEOUT = 10.0
# Largest frame payload (bytes): a peer announcing more is cut off before it is read.
_FRAME = 1 << 20


class SecretError(ValueError):
    """The shared secret is missing, too short, or stored in a file others can read."""


class AuthError(ConnectionError):
    """The peer did not prove the shared key (or a frame's tag did not verify)."""


# -- the secret ------------------------------------------------------------------------------


def load_secret(*, file: str | Path | None = None, env: str | None = None) -> bytes:
    """Read the shared secret from `file` (a regular file of this user, mode 0600 or
    stricter; surrounding whitespace ignored) or from the environment variable named `env`
    (default ENGINE_SWEEP_SECRET when no file is given). Raise SecretError saying what is wrong
    and what to do; the message never holds the secret."""
    if file is not None and env is not None:
        raise SecretError("give the sweep secret as a file or an environment variable, not both")
    if file is not None:
        path = Path(file)
        try:
            value = read_private_file(path, "sweep secret file").strip()
        except PrivateFileError as exc:
            raise SecretError(str(exc)) from None
        where = f"sweep secret file {path}"
    else:
        name = env or DEFAULT_SECRET_ENV
        raw = os.environ.get(name)
        if raw is None:
            raise SecretError(f"no sweep secret: set the environment variable {name} or give "
                              "a secret file (--secret-file)")
        value = raw.strip().encode()
        where = f"environment variable {name}"
    if len(value) < MIN_SECRET:
        raise SecretError(f"{where} holds fewer than {MIN_SECRET} bytes; make one with: "
                          "python -c 'import secrets; print(secrets.token_hex(32))'")
    return value


def derive_key(secret: bytes) -> bytes:
    """The link key derived from a shared secret (the secret itself never goes on a wire)."""
    return hmac.new(secret, b"engine sweep link key v1", hashlib.sha256).digest()


def new_key() -> bytes:
    """A fresh random link key, for a sweep whose actors all run on this host."""
    return secrets.token_bytes(32)


# -- the handshake ---------------------------------------------------------------------------


def _mac(key: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, label + b"".join(parts), hashlib.sha256).digest()


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int, buf: bytearray) -> bytes:
    while len(buf) < n:
        data = await stream.receive_some(max(n - len(buf), 4096))
        if not data:
            raise AuthError("the peer closed the connection during the handshake")
        buf.extend(data)
    out = bytes(buf[:n])
    del buf[:n]
    return out


async def _server_handshake(stream: trio.SocketStream, key: bytes) -> _Sealed:
    buf = bytearray()
    nonce_s = secrets.token_bytes(_NONCE)
    await stream.send_all(_MAGIC + nonce_s)
    if await _read_exactly(stream, len(_MAGIC), buf) != _MAGIC:
        raise AuthError("not an authenticated sweep peer (no key proof)")
    nonce_c = await _read_exactly(stream, _NONCE, buf)
    proof = await _read_exactly(stream, _TAG, buf)
    if not hmac.compare_digest(proof, _mac(key, b"client", nonce_s, nonce_c)):
        raise AuthError("wrong key proof (a different secret)")
    await stream.send_all(_mac(key, b"server", nonce_s, nonce_c))
    return _Sealed(stream, _mac(key, b"s2c", nonce_s, nonce_c),
                   _mac(key, b"c2s", nonce_s, nonce_c), buf)


async def _client_handshake(stream: trio.SocketStream, key: bytes) -> _Sealed:
    buf = bytearray()
    if await _read_exactly(stream, len(_MAGIC), buf) != _MAGIC:
        raise AuthError("the peer is not an authenticated sweep actor")
    nonce_s = await _read_exactly(stream, _NONCE, buf)
    nonce_c = secrets.token_bytes(_NONCE)
    await stream.send_all(_MAGIC + nonce_c + _mac(key, b"client", nonce_s, nonce_c))
    proof = await _read_exactly(stream, _TAG, buf)
    if not hmac.compare_digest(proof, _mac(key, b"server", nonce_s, nonce_c)):
        raise AuthError("the peer's key proof is wrong (a different secret)")
    return _Sealed(stream, _mac(key, b"c2s", nonce_s, nonce_c),
                   _mac(key, b"s2c", nonce_s, nonce_c), buf)


class _Sealed(trio.abc.Stream):
    """A socket stream whose bytes travel in frames `length | payload | tag`, the tag an HMAC
    of (sequence number, payload) under this direction's session key."""

    def __init__(self, stream: trio.SocketStream, send_key: bytes, recv_key: bytes,
                 leftover: bytearray) -> None:
        self.stream = stream
        self.socket = stream.socket
        self._send_key, self._recv_key = send_key, recv_key
        self._sent = self._received = 0
        self._raw = leftover
        self._plain = bytearray()

    def _tag(self, key: bytes, seq: int, payload: bytes) -> bytes:
        return hmac.new(key, struct.pack(">Q", seq) + payload, hashlib.sha256).digest()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        frames = []
        for n, i in enumerate(range(0, max(len(view), 1), _FRAME)):
            payload = bytes(view[i:i + _FRAME])
            frames.append(struct.pack(">I", len(payload)) + payload
                          + self._tag(self._send_key, self._sent + n, payload))
        await self.stream.send_all(b"".join(frames))
        # Counted once sent: a send cancelled before its first byte leaves the sequence intact.
        self._sent += len(frames)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while not self._plain:
            if not await self._fill(4):
                return b""
            size = struct.unpack(">I", bytes(self._raw[:4]))[0]
            if size > _FRAME:
                raise AuthError(f"frame of {size} bytes is over the {_FRAME} limit")
            if not await self._fill(4 + size + _TAG):
                raise AuthError("the peer closed the connection mid-frame")
            payload = bytes(self._raw[4:4 + size])
            tag = bytes(self._raw[4 + size:4 + size + _TAG])
            del self._raw[:4 + size + _TAG]
            if not hmac.compare_digest(tag, self._tag(self._recv_key, self._received, payload)):
                raise AuthError("a frame failed its integrity check (tampered or replayed)")
            self._received += 1
            self._plain.extend(payload)
        n = len(self._plain) if max_bytes is None else min(max_bytes, len(self._plain))
        out = bytes(self._plain[:n])
        del self._plain[:n]
        return out

    async def _fill(self, n: int) -> bool:
        while len(self._raw) < n:
            data = await self.stream.receive_some(max(n - len(self._raw), 65536))
            if not data:
                if self._raw:
                    raise AuthError("the peer closed the connection mid-frame")
                return False
            self._raw.extend(data)
        return True

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


def is_authenticated(chan: Any) -> bool:
    """Whether a tractor channel passed the key handshake (its bytes go through a sealed
    stream)."""
    msgstream = getattr(chan, "msgstream", None)
    return isinstance(getattr(msgstream, "stream", None), _Sealed)


# -- where tractor meets the handshake --------------------------------------------------------

_key: bytes | None = None
_allowed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None
_installed = False


def _peer(stream: trio.SocketStream) -> tuple[str, int]:
    try:
        addr = stream.socket.getpeername()
        return str(addr[0]), int(addr[1])
    except OSError:
        return "?", 0


def _is_allowed(ip: str) -> bool:
    if _allowed is None:
        return True
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    return addr.is_loopback or any(addr in net for net in _allowed)


def _install() -> None:
    """Wrap tractor 0.1.0a5's three doors: the connection it accepts, the one it opens and
    the child process it spawns. Outside `keyed` each wrapper does exactly what tractor did."""
    global _installed
    if _installed:
        return
    from tractor import _spawn
    from tractor._actor import Actor
    from tractor._ipc import Channel

    if getattr(tractor, "__version__", "0.1.0a5") not in ("0.1.0a5",):
        raise RuntimeError("engine.actors.sweep_auth is written against tractor 0.1.0a5")
    accept = Actor._stream_handler
    connect = Channel.connect

    async def stream_handler(self: Any, stream: trio.SocketStream) -> None:
        key = _key
        if key is None:
            return await accept(self, stream)
        ip, port = _peer(stream)
        try:
            if not _is_allowed(ip):
                raise AuthError(f"{ip} is not an allowed sweep host")
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                sealed = await _server_handshake(stream, key)
        except (AuthError, trio.TooSlowError, trio.BrokenResourceError,
                trio.ClosedResourceError, OSError) as exc:
            why = str(exc) or f"no proof within {HANDSHAKE_TIMEOUT:g} s"
            if isinstance(exc, AuthError) and "closed the connection" not in why:
                log.warning("refused a connection from %s:%d: %s", ip, port, why)
            else:  # gone before proving anything (tractor's own probe does this)
                log.debug("connection from %s:%d ended before the handshake: %s", ip, port, why)
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        return await accept(self, sealed)

    async def channel_connect(self: Any, destaddr: tuple | None = None, **kwargs: Any) -> Any:
        key = _key
        if key is None:
            return await connect(self, destaddr, **kwargs)
        if self.connected():
            raise RuntimeError("channel is already connected?")
        destaddr = destaddr or self._destaddr
        stream = await trio.open_tcp_stream(*destaddr, **kwargs)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                sealed = await _client_handshake(stream, key)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            if isinstance(exc, AuthError | trio.TooSlowError):
                log.debug("%s:%s refused our key or did not prove its own: %s",
                          destaddr[0], destaddr[1], exc or "timed out")
                raise AuthError(f"{destaddr[0]}:{destaddr[1]}: {exc or 'handshake timed out'}"
                                ) from None
            raise
        self._stream = sealed
        return self.set_msg_transport(sealed)

    class _Lowlevel:
        def __getattr__(self, name: str) -> Any:
            return getattr(trio.lowlevel, name)

        @staticmethod
        async def open_process(cmd: Any, **kwargs: Any) -> Any:
            key = _key
            if key is not None and list(cmd[1:3]) == ["-m", "tractor._child"]:
                cmd = [cmd[0], "-m", "engine.actors.sweep_auth", *cmd[3:]]
                env = dict(kwargs.pop("env", None) or os.environ)
                env[_CHILD_ENV] = key.hex()
                if _allowed is not None:
                    env[_CHILD_ENV + "_ALLOW"] = ",".join(str(n) for n in _allowed)
                kwargs["env"] = env
            return await trio.lowlevel.open_process(cmd, **kwargs)

    class _Trio:
        lowlevel = _Lowlevel()

        def __getattr__(self, name: str) -> Any:
            return getattr(trio, name)

    Actor._stream_handler = stream_handler
    Channel.connect = channel_connect
    _spawn.trio = _Trio()
    _installed = True


def _networks(hosts: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    import socket

    out = []
    for host in hosts:
        try:
            out.append(ipaddress.ip_network(host, strict=False))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise SecretError(f"allowed host {host!r}: cannot resolve it ({exc})") from None
        out.extend(ipaddress.ip_network(info[4][0]) for info in infos)
    return out


@contextmanager
def keyed(key: bytes, allow: Iterable[str] | None = None) -> Iterator[None]:
    """Require `key` on every tractor connection this process opens or accepts (and in every
    actor it spawns) for the duration. With `allow` (addresses, networks or host names),
    connections from other addresses than these and loopback are refused before the
    handshake."""
    global _key, _allowed
    _install()
    if _key is not None:
        raise RuntimeError("a keyed sweep is already running in this process")
    _key, _allowed = key, (_networks(allow) if allow is not None else None)
    try:
        yield
    finally:
        _key, _allowed = None, None


def allowed(ip: str) -> bool:
    """Whether `ip` passes the current allow-list (always true outside `keyed(..., allow)`)."""
    return _is_allowed(ip)


def _child_main() -> None:
    """Boot a spawned worker actor: take the key from the environment, then run tractor's
    own child entry under it."""
    global _key, _allowed
    import runpy

    hexkey = os.environ.pop(_CHILD_ENV, "")
    allow = os.environ.pop(_CHILD_ENV + "_ALLOW", None)
    if not hexkey:
        sys.exit("engine.actors.sweep_auth: no link key in the environment")
    _install()
    _key = bytes.fromhex(hexkey)
    _allowed = [ipaddress.ip_network(n) for n in allow.split(",") if n] if allow else None
    sys.argv[0] = "tractor._child"
    runpy.run_module("tractor._child", run_name="__main__", alter_sys=False)


if __name__ == "__main__":
    # Run from the module tractor's runtime imports, not from this `__main__` copy of it.
    from engine.actors import sweep_auth as _auth

    _auth._child_main()
