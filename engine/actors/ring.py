"""A lane: one subscriber's quote batches in a shared-memory ring, with a doorbell socket.

The feed daemon writes each batch (msgpack bytes) into a single-producer single-consumer byte
ring in a shared-memory segment it owns (`engine_<pid>_...`, unlinked when the lane ends, by
the resource tracker if the daemon is killed), then rings a doorbell: one byte on a Unix socket
paired with the subscriber. The subscriber wakes on that byte and reads every batch the ring
holds in one go, in place: no TCP, no tractor framing, no copy through the kernel but a byte.

Pairing goes through the subscriber's tractor context, which still owns the lane's lifetime:
the daemon's `LaneServer` listens on a Unix socket (abstract namespace: no file) and hands the
other side the socket's name, the ring's token and a one-time token in the context's
`started` message; the other side connects and presents the token. The socket closes
with the context (either end leaving, or cancellation), and the kernel closes it when a
process dies, so a reader learns at once that the writer is gone.

The writer never waits for the reader: `RingWriter.put` returns False when the ring lacks
room, and the caller keeps the batch (the daemon's mailbox coalesces quotes as it always did).
Ring positions are byte counts that only grow (the reader's is written by the reader alone);
data is written before the position that exposes it, as in `engine.shm`. Nothing here knows
what the bytes mean.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from engine.shm import ShmArray

__all__ = ["LaneServer", "RingWriter", "RingReader", "connect_lane", "RING_BYTES"]

_LEN = struct.Struct("<I")
_TOKEN = 16  # hex characters of a pairing token
# A connection that has not presented its token after this long (seconds) is dropped.
HANDSHAKE = 2.0
# Bytes of ring per subscriber: some 30k quotes of a few ticks, seconds of a busy feed.
RING_BYTES = 1 << 22
# The ring's own header at the front of the segment, as int64: bytes written, bytes read,
# closed by the writer; padded to a cache line.
_HEAD = 64
_WRITTEN, _READ, _CLOSED = range(3)
_BYTE = np.dtype([("b", "u1")])
_BELL = b"\x01"


class _Ring:
    """The byte ring in a segment: header views and the data area."""

    def __init__(self, shm: ShmArray) -> None:
        self.shm = shm
        raw = shm.buffer.view(np.uint8)
        self.head = memoryview(raw[:_HEAD]).cast("q")
        self.data = memoryview(raw[_HEAD:])
        self.size = len(self.data)

    def close(self) -> None:
        self.head.release()
        self.data.release()
        self.shm.close()


class RingWriter:
    """The daemon's end of one lane: `put` batches, `close` when the lane ends."""

    def __init__(self, capacity: int = RING_BYTES) -> None:
        self._ring = _Ring(ShmArray.create(_BYTE, _HEAD + capacity, start=0))
        self._bell: int | None = None  # the doorbell socket's fd, once the reader connected
        self.lost = False  # the doorbell broke: the reader is gone
        self._closed = False

    @property
    def token(self) -> dict[str, Any]:
        return self._ring.shm.token.model_dump()

    @property
    def capacity(self) -> int:
        return self._ring.size - _LEN.size

    def ring_on(self, stream: trio.SocketStream) -> None:
        self._bell = stream.socket.fileno()

    def room(self) -> int:
        head = self._ring.head
        return self._ring.size - (head[_WRITTEN] - head[_READ])

    def put(self, payload: bytes) -> bool:
        """Write one record and ring; False (nothing written) when the ring lacks room."""
        ring = self._ring
        head, data, size = ring.head, ring.data, ring.size
        n = _LEN.size + len(payload)
        written = head[_WRITTEN]
        if n > size - (written - head[_READ]):
            return False
        record = _LEN.pack(len(payload)) + payload
        at = written % size
        cut = min(n, size - at)
        data[at:at + cut] = record[:cut]
        if cut < n:
            data[:n - cut] = record[cut:]
        head[_WRITTEN] = written + n  # after the bytes it exposes
        self.ring()
        return True

    def ring(self) -> None:
        """Wake the reader (a full socket buffer means it has wake-ups waiting already)."""
        if self._bell is None:
            return
        try:
            os.write(self._bell, _BELL)
        except BlockingIOError:
            pass
        except OSError:
            self.lost = True

    def close(self) -> None:
        """Mark the ring closed (a reader still attached sees the end), wake the reader, and
        remove the segment."""
        if self._closed:
            return
        self._closed = True
        ring = self._ring
        ring.head[_CLOSED] = 1
        self.ring()
        self._bell = None
        ring.shm.unlink()
        ring.close()


class RingReader:
    """The subscriber's end: `receive()` returns one record; EndOfChannel when the lane
    closes. Records already in the ring come without waiting (`receive_nowait`)."""

    def __init__(self, token: dict[str, Any], bell: trio.SocketStream) -> None:
        self._ring = _Ring(ShmArray.attach(token, readonly=False))
        self._bell = bell
        self._fd = bell.socket.fileno()
        self._records: deque[bytes] = deque()

    def _take(self) -> None:
        ring = self._ring
        head, data, size = ring.head, ring.data, ring.size
        read, written = head[_READ], head[_WRITTEN]
        if written == read:
            return
        at, n = read % size, written - read
        cut = min(n, size - at)
        chunk = bytes(data[at:at + cut]) if cut == n else bytes(data[at:]) + bytes(data[:n - cut])
        head[_READ] = written  # the bytes are ours now: the writer may reuse them
        pos, records = 0, self._records
        while pos < n:
            (length,) = _LEN.unpack_from(chunk, pos)
            pos += _LEN.size
            records.append(chunk[pos:pos + length])
            pos += length

    def receive_nowait(self) -> bytes | None:
        """The next record if one is in the ring, else None."""
        if not self._records:
            self._take()
        return self._records.popleft() if self._records else None

    async def receive(self) -> bytes:
        waited = False
        while True:
            # A cancellation is taken before a record is, never after: a record taken and then
            # dropped by a deadline would be a lost quote.
            await trio.lowlevel.checkpoint_if_cancelled()
            closed = self._ring.head[_CLOSED]  # before the take: records written before it
            record = self.receive_nowait()
            if record is not None:
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()  # a busy lane lets others run
                return record
            if closed:
                raise trio.EndOfChannel
            # The bell is read straight off the socket: a stream's receive_some would add a
            # trip through the scheduler to every wake-up.
            try:
                rung = os.read(self._fd, 4096)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                waited = True
                continue
            if not rung:  # the writer's end closed (its process may have died)
                self._take()
                if not self._records:
                    raise trio.EndOfChannel

    async def aclose(self) -> None:
        self._records.clear()
        self._ring.close()
        await self._bell.aclose()


@dataclass
class _Slot:
    connected: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    stream: trio.SocketStream | None = None


class LaneServer:
    """The doorbell socket of one actor's lanes: a Unix socket in the abstract namespace (no
    file to leave behind, gone with the process), answering only a token it handed out."""

    def __init__(self) -> None:
        self.path: str | None = None
        self._waiting: dict[str, _Slot] = {}

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled."""
        path = f"\0engine_lanes_{os.getpid()}_{secrets.token_hex(8)}"
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        with sock:
            await sock.bind(path)
            sock.listen(64)
            self.path = path
            try:
                async with trio.open_nursery() as nursery:
                    task_status.started(path)
                    await trio.serve_listeners(self._handle, [trio.SocketListener(sock)],
                                               handler_nursery=nursery)
            finally:
                self.path = None

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
            return  # unknown or late: the listener closes the connection
        slot.stream = stream
        slot.connected.set()
        await slot.done.wait()  # the connection lives until the context is over


async def connect_lane(path: str, ring: dict[str, Any], token: str) -> RingReader:
    """Connect to a lane server's doorbell, present `token`, attach the ring."""
    stream = await trio.open_unix_socket(path)
    try:
        await stream.send_all(token.encode())
        return RingReader(ring, stream)
    except BaseException:
        with contextlib.suppress(Exception):
            await trio.aclose_forcefully(stream)
        raise
