"""The lanes' shared-memory ring: every record arrives once, in order, across wrap-arounds and
a full ring; a full ring never blocks the writer (the daemon's mailbox coalesces quotes behind
it, bars never dropped); the end of a lane is seen by its reader; no segment is left behind."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.actors.daemon import _RingLane
from engine.actors.ring import LaneServer, RingReader, RingWriter, connect_lane
from engine.scheduler import Mailbox


def _segment(writer: RingWriter) -> Path:
    return Path("/dev/shm") / writer.token["name"]


async def _pair(capacity: int) -> tuple[RingWriter, RingReader, trio.SocketStream]:
    writer = RingWriter(capacity)
    a, b = trio.socket.socketpair()
    near, far = trio.SocketStream(a), trio.SocketStream(b)
    writer.ring_on(near)
    return writer, RingReader(writer.token, far), near


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=120),
       capacity=st.integers(310, 1200))
def test_records_arrive_once_in_order_across_wraps_and_a_full_ring(sizes, capacity):
    async def main() -> None:
        writer, reader, near = await _pair(capacity)
        try:
            sent, got, pending = [], [], list(enumerate(sizes))
            while pending:
                i, size = pending[0]
                payload = i.to_bytes(4, "little") * (size // 4 + 1)
                payload = payload[:max(size, 4)]
                before = writer.room()
                if writer.put(payload):
                    sent.append(payload)
                    pending.pop(0)
                    continue
                # Full: nothing was written, and the reader frees room.
                assert writer.room() == before
                while (record := reader.receive_nowait()) is not None:
                    got.append(record)
            while (record := reader.receive_nowait()) is not None:
                got.append(record)
            assert got == sent
        finally:
            writer.close()
            await reader.aclose()
            await near.aclose()

    trio.run(main)


async def test_a_reader_waits_for_the_bell_and_sees_the_end_after_the_last_record():
    writer, reader, near = await _pair(1 << 12)
    segment = _segment(writer)
    try:
        got = []

        async def read() -> None:
            while True:
                try:
                    got.append(await reader.receive())
                except trio.EndOfChannel:
                    return

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                for i in range(50):
                    assert writer.put(b"x%d" % i)
                    await trio.lowlevel.checkpoint()
                writer.close()
        assert got == [b"x%d" % i for i in range(50)]
        assert not segment.exists(), "the writer left its ring segment behind"
    finally:
        writer.close()
        await reader.aclose()
        await near.aclose()


async def test_a_reader_sees_the_end_when_the_writer_side_socket_closes():
    writer, reader, near = await _pair(1 << 12)
    try:
        assert writer.put(b"last")
        await near.aclose()  # the daemon's process died: the kernel closes its socket
        assert await reader.receive() == b"last"
        with pytest.raises(trio.EndOfChannel):
            await reader.receive()
    finally:
        writer.close()
        await reader.aclose()


async def test_the_writer_notices_a_reader_that_left():
    writer, reader, near = await _pair(1 << 12)
    try:
        await reader.aclose()
        for _ in range(3):  # the first write may still find the socket's buffer
            writer.put(b"x")
        assert writer.lost
    finally:
        writer.close()
        await near.aclose()


def _decode(records: list[bytes]) -> list:
    out = []
    for record in records:
        if record:
            out += msgspec.msgpack.decode(record)
    return out


async def _through_lane(capacity: int, ring: int) -> tuple[list, list, Mailbox]:
    """Offer 200 one-quote batches (a bar every tenth) to a lane with a `ring`-byte ring and a
    mailbox of `capacity`; return what was offered and what the reader got, as wire items."""
    writer, reader, near = await _pair(ring)
    box = Mailbox(capacity=capacity)
    lane = _RingLane(writer, box, ready=True)
    offered: list = []
    got: list = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lane.pump)
            for i in range(200):
                quote = {"symbol": "btcusd" if i % 3 else "ethusd", "seq": i}
                bars = ["btcusd"] if i % 10 == 9 else []
                lane.offer([quote], bars, [])
                offered += [[0, quote]] + [[1, b] for b in bars]
            with trio.fail_after(10):
                # Until every bar and each symbol's last quote are in.
                while (sum(k == 1 for k, _ in got) < 20
                       or not {198, 199} <= {p["seq"] for k, p in got if k == 0}):
                    got += _decode([await reader.receive()])
            nursery.cancel_scope.cancel()
    finally:
        writer.close()
        await reader.aclose()
        await near.aclose()
    return offered, got, box


async def test_a_lane_whose_ring_fills_keeps_every_item_in_order():
    # A ring too small for the burst and a mailbox that holds it all: batches wait in the
    # mailbox behind what the pump holds, and arrive exactly as offered.
    offered, got, box = await _through_lane(capacity=10_000, ring=600)
    assert box.coalesced == 0
    assert got == offered


async def test_a_lane_behind_coalesces_quotes_per_symbol_and_never_drops_a_bar():
    offered, got, box = await _through_lane(capacity=8, ring=600)
    assert box.coalesced > 0, "the ring never filled: the test did not test a full ring"
    quotes = [p for k, p in got if k == 0]
    # Every quote missing was coalesced away (the count also holds the newest ones delivered).
    assert 0 < 200 - len(quotes) <= box.coalesced
    for sym in ("btcusd", "ethusd"):
        seqs = [q["seq"] for q in quotes if q["symbol"] == sym]
        assert seqs == sorted(set(seqs)), f"{sym}: a quote came twice or overtook another"
        assert seqs[-1] == max(q["seq"] for k, q in offered if k == 0 and q["symbol"] == sym)
    assert [p for k, p in got if k == 1] == ["btcusd"] * 20  # every bar, none dropped


async def test_a_lane_server_pairs_by_token_and_removes_its_socket():
    server = LaneServer()
    async with trio.open_nursery() as nursery:
        path = await nursery.start(server.serve)
        assert path.startswith("\0")  # abstract: no file to leave behind
        token, slot = server.expect()
        writer = RingWriter(1 << 12)
        reader = await connect_lane(path, writer.token, token)
        try:
            with trio.fail_after(5):
                await slot.connected.wait()
            assert slot.stream is not None
            writer.ring_on(slot.stream)
            assert writer.put(b"hello")
            assert await reader.receive() == b"hello"
            # A wrong token is not paired.
            stranger = await trio.open_unix_socket(path)
            await stranger.send_all(b"0" * 16)
            assert await stranger.receive_some(10) == b""
            await stranger.aclose()
        finally:
            writer.close()
            server.forget(token, slot)
            await reader.aclose()
        nursery.cancel_scope.cancel()
    with pytest.raises(ConnectionRefusedError):
        await trio.open_unix_socket(path)  # nobody listens once it is over


async def test_a_deadline_never_takes_a_record_with_it(mock_clock):
    # A subscriber reads under a silence deadline. When the deadline and a record come due in
    # the same turn (its own loop was stalled), the record must still be there afterwards.
    writer, reader, near = await _pair(1 << 12)
    try:
        # A record already in the ring, and a scope cancelled before the reader looks.
        assert writer.put(b"one")
        with trio.CancelScope() as scope:
            scope.cancel()
            await reader.receive()
        assert scope.cancelled_caught
        assert reader.receive_nowait() == b"one"

        # A reader asleep on the bell: the bell rings and the deadline passes together.
        got, woke = [], trio.Event()

        async def read() -> None:
            with trio.move_on_after(1):
                got.append(await reader.receive())
            woke.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert writer.put(b"two")
            mock_clock.jump(2)
            await woke.wait()
        assert got == [b"two"] or reader.receive_nowait() == b"two"
    finally:
        writer.close()
        await reader.aclose()
        await near.aclose()


async def test_a_subscriber_whose_own_loop_stalled_does_not_call_a_live_daemon_silent(mock_clock):
    from engine.actors.daemon import SILENCE, Subscription, _encode, _wire
    from engine.scheduler import BAR, QUOTE

    writer, reader, near = await _pair(1 << 12)
    sub = Subscription("feed.test", {}, reader)
    try:
        got = []

        async def follow() -> None:
            got.append(await sub.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.testing.wait_all_tasks_blocked()
            # The daemon's heartbeat is waiting, but the subscriber only looks once its
            # silence deadline has passed (a kernel compiling on a cold cache held its loop).
            assert writer.put(b"")
            mock_clock.jump(SILENCE + 0.1)
            await trio.testing.wait_all_tasks_blocked()
            assert writer.put(_encode(_wire([{"symbol": "btcusd", "price": 1.0}], ["btcusd"],
                                            [])))
        assert got == [[[QUOTE, {"symbol": "btcusd", "price": 1.0}], [BAR, "btcusd"]]]
    finally:
        writer.close()
        await reader.aclose()
        await near.aclose()
