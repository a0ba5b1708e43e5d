"""One symbol's history before the anchor, as 1-second OHLCV bars, drawn backwards in blocks.

History is read from the anchor into the past: block 0 holds the `BLOCK` seconds just before the
anchor and ends at the anchor's log mid, block 1 the seconds before that, and so on. Each block
has its own seeded generator, so a bar is the same whatever frame size or count asked for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from engine.dtypes import ohlc_dtype

from . import _market

if TYPE_CHECKING:
    from ._symbols import SymbolSpec

BLOCK = 50  # seconds of history per generator
# Events simulated per history second; a busier second is represented by this many, with its
# volume and trade count scaled up, so deep history at 100k ticks/s stays cheap.
HISTORY_CAP = 256
# How many older blocks to search for the close that quiet bars at a block's start carry.
LOOKAHEAD = 20


class _Block(NamedTuple):
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray  # NaN where the second had no trade
    volume: np.ndarray
    count: np.ndarray
    wap: np.ndarray
    mid_open: float  # mid at the block's start, rounded to the tick
    last_trade: float  # the block's last trade price, NaN for none


class History:
    """The history of one symbol in one market configuration; blocks are drawn once and kept.

    `seed` and `anchor` (epoch s) are the market's, `params` its dynamics for this symbol."""

    def __init__(self, seed: int, anchor: float, params: _market.Params, spec: SymbolSpec
                 ) -> None:
        self._seed = seed
        self._key = spec.key
        self._params = params
        self._anchor = anchor
        self.x_anchor = _market.anchor_log_price(seed, spec.key, spec.price)
        self._x_edge = self.x_anchor  # log mid at the newer edge of the next block to draw
        self._blocks: list[_Block] = []

    def _raw(self, b: int) -> _Block:
        while len(self._blocks) <= b:
            self._draw()
        return self._blocks[b]

    def _draw(self) -> None:
        p = self._params
        rng = _market.rng_for(self._seed, self._key, _market.KIND_HISTORY, len(self._blocks))
        steps = _market.draw_steps(rng, BLOCK, p)
        step = steps.diffusion + steps.jump
        # Read the walk backwards: edge i is the block's end minus the steps after it.
        x_edges = self._x_edge - np.append(np.cumsum(step[::-1])[::-1], 0.0)
        ev = _market.draw_events(rng, x_edges, steps, p, cap=HISTORY_CAP)
        o, h, lo, c, v, n, w = _market.bars_from_trades(ev, BLOCK)
        traded = np.flatnonzero(~np.isnan(c))
        last = float(c[traded[-1]]) if len(traded) else float("nan")
        mid_open = float(_market.round_to_tick(np.exp(x_edges[:1]), p)[0])
        self._blocks.append(_Block(o, h, lo, c, v, n, w, mid_open, last))
        self._x_edge = float(x_edges[0])

    def _carry_before(self, b: int) -> float:
        for older in range(b + 1, b + 1 + LOOKAHEAD):
            last = self._raw(older).last_trade
            if last == last:  # not NaN
                return last
        return float("nan")

    def block_rows(self, b: int) -> np.ndarray:
        """Return block `b`'s bars as `ohlc_dtype` rows, oldest first (index left 0)."""
        raw = self._raw(b)
        rows = np.zeros(BLOCK, dtype=ohlc_dtype)
        start = self._anchor - (b + 1) * BLOCK
        rows["time"] = np.arange(start, start + BLOCK)
        bars = tuple(a.copy() for a in (raw.open, raw.high, raw.low, raw.close, raw.wap))
        carry = float("nan")
        if np.isnan(raw.close[0]):
            carry = self._carry_before(b)
            if np.isnan(carry):  # no trade anywhere near: flat at the opening mid
                carry = raw.mid_open
        _market.fill_quiet_bars(bars, carry)
        for field, values in zip(("open", "high", "low", "close", "bar_wap"), bars, strict=True):
            rows[field] = values
        rows["volume"] = raw.volume
        rows["count"] = raw.count
        return rows

    def frame_blocks(self, j: int, size: int) -> range:
        """Return the blocks of the `size` bars ending `j * size` seconds before the anchor,
        oldest first."""
        if size % BLOCK:
            raise ValueError(f"frame size {size} is not a multiple of {BLOCK}")
        per = size // BLOCK
        return range((j + 1) * per - 1, j * per - 1, -1)

    def last_close(self) -> float:
        """Return the close of the last bar before the anchor: where the live stream starts."""
        return float(self.block_rows(0)["close"][-1])
