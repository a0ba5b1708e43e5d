"""One symbol's live market after the anchor, drawn a second at a time, and its quote messages.

No trio and no clock here: the stream asks for the events of a 10 ms window by number, and this
module answers with SPEC quote messages. Window `j` covers [j / WINDOWS, (j + 1) / WINDOWS)
seconds after the anchor.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _market

if TYPE_CHECKING:
    from ._config import Market
    from ._symbols import SymbolSpec

WINDOWS = 10000  # windows per second: the stream wakes every 0.1 ms of clock time at most


class LiveSymbol:
    """The live events of one requested symbol, from the anchor on."""

    def __init__(self, market: Market, spec: SymbolSpec, requested: str) -> None:
        self.symbol = requested
        self._p = market.params(spec)
        self._anchor = market.anchor
        history = market.history(spec)
        self._x0 = history.x_anchor  # log mid at the anchor
        self._x = self._x0  # log mid at the start of the next second to draw
        self._last0 = self.last = history.last_close()
        self._rng = _market.rng_for(market.config.seed, spec.key, _market.KIND_LIVE)
        # Messages per second at most; above it, consecutive events share a message.
        self._rate = market.config.max_msg_rate
        self._sent = 0
        self._sec = -1
        self._pos = 0
        self._win = np.zeros(0, dtype=np.int64)

    def first_quote(self) -> dict[str, Any]:
        """Return the snapshot at the anchor: the last history close and the book then."""
        p = self._p
        mid = math.exp(self._x0) / p.tick
        bid = max(math.floor(mid - p.spread_ticks / 2 + 0.5), 1)
        return {
            "symbol": self.symbol,
            "last": self._last0,
            "time": float(self._anchor),
            "bid": round(bid * p.tick, p.price_decimals),
            "ask": round((bid + p.spread_ticks) * p.tick, p.price_decimals),
            "ticks": [],
        }

    def _draw_second(self) -> None:
        p = self._p
        self._sec += 1
        steps = _market.draw_steps(self._rng, 1, p)
        x_end = self._x + float(steps.diffusion[0] + steps.jump[0])
        ev = _market.draw_events(self._rng, np.array([self._x, x_end]), steps, p)
        self._x = x_end
        last = _market.carry_last(ev.trade, ev.price, self.last)
        if len(last):
            self.last = float(last[-1])
        times = (self._anchor + self._sec) + ev.u
        self._times = times
        self._win = np.minimum((ev.u * WINDOWS).astype(np.int64), WINDOWS - 1)
        self._pos = 0
        self._cols = [
            times.tolist(),
            ev.bid.tolist(),
            ev.ask.tolist(),
            ev.bid_size.tolist(),
            ev.ask_size.tolist(),
            ev.trade.tolist(),
            ev.price.tolist(),
            ev.size.tolist(),
            last.tolist(),
        ]

    def next_window(self) -> int:
        """Return the first window that may hold an event not yet taken."""
        if self._pos < len(self._win):
            j = self._sec * WINDOWS + int(self._win[self._pos])
            if self._rate is not None:
                # The first window by whose end the message cap allows one more message.
                j = max(j, math.ceil((self._sent + 1) * WINDOWS / self._rate) - 1)
            return j
        return (self._sec + 1) * WINDOWS

    def take(self, j: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Return the messages of window `j` (and their times); windows must come in order."""
        sec, w = divmod(j, WINDOWS)
        if self._sec < sec and self._pos < len(self._win):
            # Events the message cap held back finish their second before the next is drawn.
            i0, i1 = self._pos, len(self._win)
        else:
            while self._sec < sec:
                self._draw_second()
            i0 = self._pos
            i1 = int(np.searchsorted(self._win, w, side="right"))
        if i1 <= i0:
            return [], self._times[:0]
        if self._rate is None:
            self._pos = i1
            return self._messages(i0, i1), self._times[i0:i1]
        allowed = math.floor((j + 1) * self._rate / WINDOWS) - self._sent
        if allowed < 1:
            return [], self._times[:0]  # held for a window the cap has room in
        self._pos = i1
        if i1 - i0 > allowed:
            msgs, times = self._coalesced(i0, i1, allowed)
        else:
            msgs, times = self._messages(i0, i1), self._times[i0:i1]
        self._sent += len(msgs)
        return msgs, times

    def _messages(self, i0: int, i1: int) -> list[dict[str, Any]]:
        sym = self.symbol
        out: list[dict[str, Any]] = []
        append = out.append
        for t, b, a, bs, az, tr, px, sz, last in zip(*(c[i0:i1] for c in self._cols), strict=True):
            bid = {"type": "bid", "price": b, "size": bs, "time": t}
            ask = {"type": "ask", "price": a, "size": az, "time": t}
            if tr:
                ticks = [{"type": "trade", "price": px, "size": sz, "time": t}, bid, ask]
            else:
                ticks = [bid, ask]
            append({"symbol": sym, "last": last, "time": t, "bid": b, "ask": a, "ticks": ticks})
        return out

    def _coalesced(self, i0: int, i1: int, parts: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        # Split the window's events into at most `parts` runs; a run is one message whose
        # ticks are all of its events' and whose time, last, bid and ask are its last event's.
        sym = self.symbol
        run = -(-(i1 - i0) // parts)
        ends = list(range(i0 + run, i1, run)) + [i1]
        msgs: list[dict[str, Any]] = []
        r0 = i0
        for r1 in ends:
            ticks: list[dict[str, Any]] = []
            append = ticks.append
            cols = (c[r0:r1] for c in self._cols)
            for t, b, a, bs, az, tr, px, sz, _ in zip(*cols, strict=True):
                if tr:
                    append({"type": "trade", "price": px, "size": sz, "time": t})
                append({"type": "bid", "price": b, "size": bs, "time": t})
                append({"type": "ask", "price": a, "size": az, "time": t})
            k = r1 - 1
            t, b, a, last = self._cols[0][k], self._cols[1][k], self._cols[2][k], self._cols[8][k]
            msgs.append(
                {"symbol": sym, "last": last, "time": t, "bid": b, "ask": a, "ticks": ticks}
            )
            r0 = r1
        return msgs, self._times[np.array(ends) - 1]
