"""The feed daemon actor: one provider connection, its feed and sampler, and the ShmArrays.

`serve_feed` runs in its own actor process: it opens the provider through `engine.feed.open_feed`
and owns every segment the feed creates (ticks and one OHLCV array per symbol). Other actors,
from this run or from another `engine run --actors` that found the daemon in tractor's
registry, call `open_quote_stream`: they get the shm tokens (and attach the arrays read-only,
in place), then a stream of quote batches, closed-bar symbols and feed status events: by
default in a shared-memory ring of their own with a doorbell socket (`engine.actors.ring`),
written straight from the feed's batch while the subscriber keeps up. The daemon never runs
strategy code and never copies bars to anyone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import numpy as np
import trio

from engine.actors._runtime import LINK_ERRORS, guard_child, open_peer, tractor
from engine.actors.cpus import pin_this_process
from engine.actors.logs import configure_child_logging
from engine.actors.messages import BAR, EVENT, QUOTE, encode_items, plain
from engine.actors.ring import LaneServer, RingReader, RingWriter, connect_lane
from engine.clock import LiveClock
from engine.feed import Feed, FeedError, open_feed
from engine.provider import ProviderError, load_provider
from engine.scheduler import Mailbox

__all__ = ["feed_name", "serve_feed", "open_quote_stream", "watch_feed", "FeedGone",
           "Subscription", "open_subscription"]

log = logging.getLogger("engine.actors.daemon")

# An idle stream still sends an empty batch this often (seconds), so a subscriber can tell a
# quiet market from a dead daemon (tractor 0.1.0a5 does not end streams when a peer dies).
HEARTBEAT = 0.25
# A subscriber gives up after this much silence (seconds): twelve missed heartbeats.
SILENCE = 3.0
# Most mailbox items sent in one message.
MAX_ITEMS = 1024
# Seconds the pump waits before it tries again to write to a full ring (its reader is behind).
RING_RETRY = 0.001


class FeedGone(RuntimeError):
    """The feed daemon is not registered, stopped, or went silent."""


def feed_name(provider: str, symbols: list[str], timeframe: int, options: dict[str, Any]) -> str:
    """The registry name of the daemon for this provider, symbol set, timeframe and options on
    this host: runs that would open the same stream share one daemon (its segments are local,
    so a run on another host sharing the registry gets its own)."""
    key = json.dumps([socket.gethostname(), provider, sorted(symbols), int(timeframe),
                      sorted((str(k), str(v)) for k, v in options.items())])
    short = provider.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".py").rsplit(".", 1)[-1]
    return f"feed.{short}.{hashlib.sha1(key.encode()).hexdigest()[:10]}"


@dataclass
class _Daemon:
    feed: Feed | None = None
    ready: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    subscribers: int = 0
    lanes: LaneServer = field(default_factory=LaneServer)


_daemon: _Daemon | None = None


def _state() -> _Daemon:
    global _daemon
    if _daemon is None:
        _daemon = _Daemon()
    return _daemon


def _describe(feed: Feed) -> dict[str, Any]:
    return {"pid": os.getpid(), "provider": feed.provider.name, "symbols": list(feed.symbols),
            "timeframe": feed.timeframe, "tokens": feed.tokens(),
            "history": {s: asdict(h) for s, h in feed.history.items()}}


def _stats(feed: Feed) -> dict[str, Any]:
    return {"quotes": feed.stats.quotes, "ticks": feed.stats.ticks, "bars": feed.stats.bars,
            "rejected": feed.stats.rejected, "late_ticks": feed.sampler.late_ticks,
            "last": {s: float((feed.quotes.get(s) or {}).get("last") or "nan")
                     for s in feed.symbols},
            "subscribers": _state().subscribers, "pid": os.getpid()}


async def _wait_feed() -> Feed:
    state = _state()
    await state.ready.wait()
    assert state.feed is not None
    return state.feed


@tractor.context
async def serve_feed(ctx: Any, provider: str, symbols: list[str], timeframe: int,
                     history: int = 10, warmup: int = 0,
                     options: dict[str, Any] | None = None,
                     log_level: str = "info", cpus: list[int] | None = None
                     ) -> dict[str, Any] | None:
    """Open the provider's feed in this actor and keep it until the caller sends "stop" on
    the context's stream (or cancels it); then end every subscriber's stream, close the feed
    (its segments are unlinked) and return the feed's final counters.

    `history` frames are backfilled at least, and `warmup` closed bars of `timeframe` (the most
    a strategy of the run needs), paging the provider's history (engine.feed_history).
    Sends `started` with the pid, symbols, timeframe, shm tokens and what each backfill gave,
    or `{"error": ...}` when the provider or feed cannot start. `cpus`: the CPUs to keep to
    (`engine.actors.cpus`).
    """
    configure_child_logging(log_level)
    pin_this_process(cpus, "feed daemon")
    async with trio.open_nursery() as guard:
        guard_child(guard)
        try:
            prov = load_provider(provider)
            prov.configure(**(options or {}))
            async with open_feed(prov, symbols, timeframe=timeframe, history=history,
                                 warmup=warmup, clock=LiveClock()) as feed:
                state = _state()
                await guard.start(state.lanes.serve)
                state.feed = feed
                state.ready.set()
                await ctx.started(_describe(feed))
                async with ctx.open_stream() as control:
                    async for msg in control:
                        if msg == "stop":
                            break
                state.closed.set()
                return _stats(feed)
        except (ProviderError, FeedError) as exc:
            await ctx.started({"error": str(exc), "pid": os.getpid()})
            return None
        finally:
            _state().closed.set()
            guard.cancel_scope.cancel()


@tractor.context
async def watch_feed(ctx: Any, every: float = 0.5) -> None:
    """Stream the feed's counters every `every` seconds (also a liveness signal); any message
    received is answered at once with fresh counters."""
    feed = await _wait_feed()
    await ctx.started(_describe(feed))
    async with ctx.open_stream() as stream, trio.open_nursery() as nursery:

        async def answer() -> None:
            async for _ in stream:
                await stream.send(_stats(feed))
            nursery.cancel_scope.cancel()

        nursery.start_soon(answer)
        try:
            while True:
                await stream.send(_stats(feed))
                await trio.sleep(every)
        except LINK_ERRORS:
            nursery.cancel_scope.cancel()


def _enc_hook(value: Any) -> Any:
    # A provider may send numpy scalars or arrays: msgpack them as builtins (anything else
    # msgpack cannot take travels as its text).
    return plain(value) if isinstance(value, np.generic | np.ndarray) else str(value)


_encode = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode
_decode = msgspec.msgpack.Decoder().decode


async def _pump(send: Callable[[bytes], Awaitable[None]], box: Mailbox) -> None:
    # Batches travel pre-encoded (bytes): tractor 0.1.0a5 formats every message it handles
    # into its (disabled) log lines, and bytes format far cheaper than nested dicts.
    while True:
        item = None
        with trio.move_on_after(HEARTBEAT):
            item = await box.get()
        if item is None:
            await send(b"")
            continue
        await send(_encode(encode_items(_drain(box, item))))


def _drain(box: Mailbox, item: Any) -> list[Any]:
    """`item` and what else the mailbox holds, up to MAX_ITEMS: one wake-up's worth."""
    items = [item]
    while len(items) < MAX_ITEMS:
        more = box.get_nowait()
        if more is None:
            break
        items.append(more)
    return items


def _wire(quotes: list[dict], bars: list[str], events: list) -> list[list[Any]]:
    """A feed batch as wire items, in the order a mailbox would hand them out."""
    return ([[QUOTE, q] for q in quotes] + [[BAR, b] for b in bars]
            + [[EVENT, e.model_dump() if hasattr(e, "model_dump") else e] for e in events])


@dataclass
class _RingLane:
    """A subscriber's ring and what its pump holds: while the pump has items out of the
    mailbox, or the mailbox has any, a new batch queues behind them (order is kept)."""

    writer: RingWriter
    box: Mailbox
    ready: bool = False  # the subscriber connected its doorbell
    holding: bool = False

    def offer(self, quotes: list[dict], bars: list[str], events: list) -> None:
        """Write a feed batch straight into the ring when nothing waits before it; else
        queue it in the mailbox (which coalesces quotes while the subscriber is behind)."""
        if self.ready and not self.holding and not self.box:
            if not (quotes or bars or events):
                return
            try:
                payload = _encode(_wire(quotes, bars, events))
            except Exception:  # noqa: BLE001 - the pump meets it again, in this lane's task
                payload = None
            if payload is not None and self.writer.put(payload):
                return
        self.box.put(quotes, bars, events)

    async def pump(self) -> None:
        """Move what queued in the mailbox into the ring as room frees up; an empty record
        every HEARTBEAT of quiet."""
        box, writer = self.box, self.writer
        while True:
            item = None
            with trio.move_on_after(HEARTBEAT):
                item = await box.get()
            if item is None:
                writer.put(b"")
                if writer.lost:
                    raise trio.BrokenResourceError("the subscriber's doorbell closed")
                continue
            self.holding = True
            parts = [_drain(box, item)]
            while parts:
                part = parts.pop()
                payload = _encode(encode_items(part))
                if len(payload) > writer.capacity:
                    if len(part) == 1:
                        log.error("a %d-byte quote stream item does not fit a subscriber's "
                                  "ring of %d bytes: skipped", len(payload), writer.capacity)
                        continue
                    half = len(part) // 2
                    parts += [part[half:], part[:half]]
                    continue
                while not writer.put(payload):
                    if writer.lost:
                        raise trio.BrokenResourceError("the subscriber's doorbell closed")
                    await trio.sleep(RING_RETRY)
            self.holding = False


@tractor.context
async def open_quote_stream(ctx: Any, symbols: list[str] | None = None,
                            capacity: int = 4096, lane: bool = False) -> None:
    """Subscribe the caller to the feed: `started` carries the shm tokens, each symbol's first
    bar row not yet announced (`visible`) and the latest quotes; then the context's stream
    carries `[kind, payload]` batches (see `engine.actors.messages`), msgpack-encoded, until
    the caller closes it. With `lane`, the batches go into a shared-memory ring of the caller's
    own with a doorbell socket instead (see `engine.actors.ring`; `started` has the socket's
    path, the ring's token and a one-time token), written straight from the feed's batch while
    the caller keeps up, and the stream only says when the caller leaves.

    A caller that falls behind gets quotes coalesced to the newest per symbol (bars and events
    are never dropped); the feed itself never waits for a subscriber.
    """
    feed = await _wait_feed()
    wanted = list(symbols or feed.symbols)
    unknown = [s for s in wanted if s not in feed.bars]
    if unknown:
        await ctx.started({"error": f"the feed does not carry {', '.join(unknown)} "
                                    f"(it streams {', '.join(feed.symbols)})"})
        return
    box = Mailbox(capacity)
    every = set(wanted) == set(feed.symbols)
    keep = set(wanted)
    lane_of = _RingLane(RingWriter(), box) if lane else None
    put = lane_of.offer if lane_of is not None else box.put

    def deliver(quotes: list[dict], bars: list[str], events: list) -> None:
        if not every:
            quotes = [q for q in quotes if q["symbol"] in keep]
            bars = [b for b in bars if b in keep]
        put(quotes, bars, events)

    # Subscribe and read the bar bounds in the same scheduler turn: every bar after `visible`
    # reaches the caller as a bar event, none before it does.
    feed.subscribe(deliver)
    state = _state()
    state.subscribers += 1
    token, slot = state.lanes.expect() if lane_of is not None else (None, None)
    try:
        snapshot = dict(_describe(feed), symbols=wanted,
                        visible={s: feed.bars[s].last_index for s in wanted},
                        quotes=plain({s: feed.quotes[s] for s in wanted if s in feed.quotes}))
        if lane_of is not None:
            snapshot["lane"] = {"path": state.lanes.path, "ring": lane_of.writer.token,
                                "token": token}
        await ctx.started(snapshot)
        async with ctx.open_stream() as stream, trio.open_nursery() as nursery:
            if slot is not None and lane_of is not None:
                with trio.move_on_after(SILENCE):
                    await slot.connected.wait()
                if slot.stream is None:
                    return  # the caller never connected its lane: it is gone
                lane_of.writer.ring_on(slot.stream)
                lane_of.ready = True

            async def until_closed() -> None:
                async for _ in stream:
                    pass
                nursery.cancel_scope.cancel()

            async def until_feed_closes() -> None:
                await state.closed.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_closed)
            nursery.start_soon(until_feed_closes)
            try:
                if lane_of is not None:
                    await lane_of.pump()
                else:
                    await _pump(stream.send, box)
            except LINK_ERRORS:
                # The subscriber vanished (its heartbeat send failed): just stop serving it.
                nursery.cancel_scope.cancel()
    finally:
        feed.unsubscribe(deliver)
        box.close()
        state.subscribers -= 1
        if lane_of is not None:
            lane_of.writer.close()
        if slot is not None:
            state.lanes.forget(token, slot)


@dataclass
class Subscription:
    """A subscriber's end of `open_quote_stream`: tokens, bar bounds, first quotes, batches
    (from the context's stream, or from a lane)."""

    name: str
    info: dict[str, Any]
    stream: Any

    @property
    def tokens(self) -> dict[str, Any]:
        return self.info["tokens"]

    @property
    def visible(self) -> dict[str, int]:
        return self.info["visible"]

    @property
    def quotes(self) -> dict[str, dict]:
        return self.info["quotes"]

    async def _within(self, seconds: float) -> Any:
        """The next payload, or None after `seconds` without one."""
        with trio.move_on_after(seconds):
            try:
                return await self.stream.receive()
            except trio.EndOfChannel:
                raise FeedGone(f"feed daemon {self.name} ended the stream") from None
            except LINK_ERRORS as exc:
                raise FeedGone(f"feed daemon {self.name} stopped "
                               f"({type(exc).__name__})") from None
        return None

    async def receive(self) -> list[list[Any]]:
        """The next non-empty batch; raise FeedGone when the daemon stops or goes silent."""
        while True:
            payload = await self._within(SILENCE)
            if payload is None:
                # Our own loop may have been the one stalled (a kernel compiling on a cold
                # cache, a loaded machine): a live daemon's heartbeats are waiting by now.
                payload = await self._within(2 * HEARTBEAT)
            if payload is None:
                raise FeedGone(f"feed daemon {self.name} went silent for {SILENCE:g} s")
            if isinstance(self.stream, RingReader):
                # Every batch already in the ring, in one wake-up.
                items = _decode(payload) if payload else []
                while (more := self.stream.receive_nowait()) is not None:
                    if more:
                        items += _decode(more)
                if items:
                    return items
            elif payload:
                return _decode(payload)


@asynccontextmanager
async def open_subscription(name: str, symbols: list[str] | None = None,
                            capacity: int = 4096, lane: bool = False
                            ) -> AsyncIterator[Subscription]:
    """Find the feed daemon `name` in the registry and subscribe to its quote stream (over a
    direct socket with `lane`)."""
    async with open_peer(name) as portal:
        if portal is None:
            raise FeedGone(f"no feed daemon named {name!r} in the registry")
        async with portal.open_context(open_quote_stream, symbols=symbols,
                                       capacity=capacity, lane=lane) as (ctx, info):
            if "error" in info:
                raise FeedGone(f"feed daemon {name}: {info['error']}")
            async with ctx.open_stream() as stream:
                if "lane" not in info:
                    yield Subscription(name, info, stream)
                    return
                lane_info = info["lane"]
                reader = await connect_lane(lane_info["path"], lane_info["ring"],
                                            lane_info["token"])
                try:
                    yield Subscription(name, info, reader)
                finally:
                    with trio.CancelScope(shield=True):
                        await reader.aclose()
