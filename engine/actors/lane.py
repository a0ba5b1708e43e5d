"""A lane: a plain TCP connection for one hot stream between two actors, paired through a
tractor context that still owns its lifetime.

tractor 0.1.0a5 runs some 200 Python calls and formats every message into (disabled) log lines
for each message it moves: ~100 us of CPU per message on the receiving side, which dominates
tick-to-strategy latency. A lane carries the same bytes with a 4-byte length prefix and nothing
else. The serving actor keeps one `LaneServer`; for each stream it hands the other side a
one-time token in the context's `started` message; the other side connects and presents it.
The lane closes with the context (either end leaving, or cancellation). Nothing here knows
what the bytes mean.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

__all__ = ["LaneServer", "LaneWriter", "LaneReader", "connect_lane"]

_LEN = struct.Struct("<I")
_TOKEN = 16  # hex characters of a pairing token
# A connection that has not presented its token after this long (seconds) is dropped.
HANDSHAKE = 2.0


@dataclass
class _Slot:
    connected: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    stream: trio.SocketStream | None = None


class LaneServer:
    """The listening socket of one actor's lanes."""

    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None
        self._waiting: dict[str, _Slot] = {}

    async def serve(self, host: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on `host` (any free port) until cancelled."""
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host=host))
            self.address = listeners[0].socket.getsockname()[:2]
            task_status.started(self.address)

    def expect(self) -> tuple[str, _Slot]:
        """A token to hand to the connecting side, and the slot its connection will fill."""
        token = secrets.token_hex(_TOKEN // 2)
        slot = self._waiting[token] = _Slot()
        return token, slot

    def forget(self, token: str, slot: _Slot) -> None:
        self._waiting.pop(token, None)
        slot.done.set()

    async def _handle(self, stream: trio.SocketStream) -> None:
        token = b""
        with trio.move_on_after(HANDSHAKE):
            while len(token) < _TOKEN:
                chunk = await stream.receive_some(_TOKEN - len(token))
                if not chunk:
                    return
                token += chunk
        slot = self._waiting.pop(token.decode(errors="replace"), None)
        if slot is None:
            return  # unknown or late: serve_tcp closes the connection
        slot.stream = stream
        slot.connected.set()
        await slot.done.wait()  # the connection lives until the context is over


class LaneWriter:
    """The sending end: length-prefixed payloads."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream

    async def send(self, payload: bytes) -> None:
        await self._stream.send_all(_LEN.pack(len(payload)) + payload)


class LaneReader:
    """The receiving end: `receive()` returns one payload; EndOfChannel when the lane closes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def _fill(self, size: int) -> None:
        while len(self._buf) < size:
            chunk = await self._stream.receive_some(1 << 16)
            if not chunk:
                raise trio.EndOfChannel
            self._buf += chunk

    async def receive(self) -> bytes:
        await self._fill(_LEN.size)
        (size,) = _LEN.unpack_from(self._buf)
        await self._fill(_LEN.size + size)
        payload = bytes(self._buf[_LEN.size:_LEN.size + size])
        del self._buf[:_LEN.size + size]
        return payload

    async def aclose(self) -> None:
        await self._stream.aclose()


async def connect_lane(address: tuple[str, int] | list[Any], token: str) -> LaneReader:
    """Connect to a lane server and present `token`."""
    stream = await trio.open_tcp_stream(str(address[0]), int(address[1]))
    try:
        await stream.send_all(token.encode())
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return LaneReader(stream)
