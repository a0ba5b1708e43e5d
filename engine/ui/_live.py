"""The dashboard's view of a running engine, read in place from the engine's shared memory.

`LiveSource` attaches (read-only) to a run's bar and tick segments and its board (engine.ui._board)
by the tokens of its run file. It folds new trade ticks into each symbol's forming bar (the engine
keeps that bar only in its sampler) and tails the board's status and log rows. `Chart` holds one
symbol's closed candles at one timeframe and the strategy's declared indicators over them,
computed incrementally with the same kernels the strategy uses. Nothing here writes to the
engine's memory or waits on the engine.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np

from engine.dtypes import TRADE, UTRADE, ohlc_dtype
from engine.sampler import period_start, resample_bars
from engine.shm import ShmArray, ShmError
from engine.ui._messages import IndicatorDecl, LogLine, RunInfo, RunStatus, board_rows

__all__ = ["Chart", "LiveSource"]

# Ticks scanned at attach to rebuild the forming bars (the newest ones: a few seconds of a busy
# feed, far more than a bar of a quiet one).
_SCAN = 200_000
LOG_LINES = 500  # strategy log lines kept for the page


def _retry(read: Any) -> Any:
    # A roll between reading the bounds and copying the rows moves them: read again.
    for _ in range(5):
        try:
            return read()
        except ShmError:
            continue
    return read()


def _rows_since(shm: ShmArray, cursor: int) -> tuple[np.ndarray, int]:
    """A copy of `shm`'s rows from `cursor` (or its oldest kept row) on, and the next cursor."""
    def read() -> tuple[np.ndarray, int]:
        lo, hi = shm.span()
        return shm.rows(max(cursor, lo), hi).copy(), hi

    return _retry(read)


class LiveSource:
    """A running engine's feed and board, attached read-only by its run file (`info`)."""

    def __init__(self, info: RunInfo) -> None:
        self.info = info
        self.pid = info.pid
        self.symbols: list[str] = list(info.symbols)
        self.timeframe = info.timeframe
        self.account: str | None = info.account
        self.ticks = ShmArray.attach(info.tokens.ticks)
        self.bars: dict[str, ShmArray] = {}
        try:
            for s, t in info.tokens.bars.items():
                self.bars[s] = ShmArray.attach(t)
            self.board = ShmArray.attach(info.board)
        except ShmError:
            self.close()
            raise
        self.forming: dict[str, list[float] | None] = dict.fromkeys(self.symbols)
        self.last: dict[str, float] = {}
        self.last_tick_time: float | None = None
        self.status: dict[str, Any] = {}  # the newest RunStatus, as a dict for the page
        self.logs: deque[dict[str, Any]] = deque(maxlen=LOG_LINES)
        self.events: deque[dict[str, Any]] = deque(maxlen=100)
        self.indicators: dict[str, list[dict[str, Any]]] = {}
        lo, hi = self.ticks.span()
        self._tick_next = max(lo, hi - _SCAN)
        self._board_next = self.board.span()[0]
        self.poll()

    def alive(self) -> bool:
        """Whether the engine process still runs."""
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True

    def close(self) -> None:
        board = getattr(self, "board", None)
        for shm in (self.ticks, *self.bars.values(), *([board] if board else [])):
            shm.close()

    # -- polling -------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Read what the engine wrote since the last poll; True when anything changed."""
        changed = self._poll_ticks()
        changed |= self._poll_board()
        for s in self.symbols:
            f = self.forming[s]
            if f is not None:
                last = self.bars[s].last_rows(1)
                if len(last) and last["time"][0] >= f[0]:
                    self.forming[s] = None  # that bar closed: it is in the segment now
                    changed = True
        return changed

    def _poll_ticks(self) -> bool:
        rows, self._tick_next = _rows_since(self.ticks, self._tick_next)
        if not len(rows):
            return False
        self.last_tick_time = float(rows["time"][-1])
        trades = rows[(rows["type"] == TRADE) | (rows["type"] == UTRADE)]
        tf = self.timeframe
        for code in np.unique(trades["sym"]):
            if not 0 <= code < len(self.symbols):
                continue
            sym = self.symbols[code]
            t = trades[trades["sym"] == code]
            starts = period_start(t["time"].astype(np.int64), tf)
            newest = int(starts[-1])
            cur = t[starts == newest]
            price, size = cur["price"], cur["size"]
            f = self.forming[sym]
            if f is None or f[0] != newest:
                closed = self.bars[sym].last_rows(1)
                if len(closed) and closed["time"][0] >= newest:
                    continue  # ticks of a bar already closed
                f = [float(newest), price[0], price.max(), price.min(), price[-1], size.sum()]
            else:
                f = [f[0], f[1], max(f[2], price.max()), min(f[3], price.min()), price[-1],
                     f[5] + size.sum()]
            self.forming[sym] = [float(x) for x in f]
            self.last[sym] = float(t["price"][-1])
        return True

    def _poll_board(self) -> bool:
        rows, self._board_next = _rows_since(self.board, self._board_next)
        for row in rows:
            try:
                msg = board_rows.validate_json(bytes(row["text"]))
            except ValueError:
                continue  # a row of a newer engine: skipped, the rest still read
            if isinstance(msg, RunStatus):
                self.status = msg.model_dump()
                for s in msg.strategies:
                    for decl in s.indicators:
                        self._declare(s.name, decl)
            elif isinstance(msg, LogLine):
                self.logs.append(msg.model_dump())
            else:
                self.events.append(msg.model_dump())
        return bool(len(rows))

    def _declare(self, strategy: str, decl: IndicatorDecl) -> None:
        decls = self.indicators.setdefault(decl.symbol, [])
        shown = ",".join(f"{p:g}" for p in decl.params if not isinstance(p, bool))
        name = f"{decl.kind}({shown})"
        if all(d["name"] != name for d in decls):
            decls.append(dict(decl.model_dump(), name=name, strategy=strategy))

    def health(self, now: float) -> dict[str, Any]:
        """Feed health for the page: rate, lag (seconds since the newest tick), gaps,
        reconnects, per-symbol status."""
        st = self.status
        return {"quotes_per_s": st.get("quotes_per_s", 0.0), "quotes": st.get("quotes", 0),
                "bars": st.get("bars", 0), "rejected": st.get("rejected", 0),
                "last_error": st.get("last_error"), "reconnects": st.get("reconnects", 0),
                "gaps": st.get("gaps", 0), "status": st.get("status", {}),
                "lag": None if self.last_tick_time is None else now - self.last_tick_time,
                "alive": self.alive()}


class Chart:
    """One symbol's closed candles at `timeframe` seconds (a multiple of the run's) and the
    declared indicators over them, grown incrementally from the bar segment."""

    def __init__(self, source: LiveSource, symbol: str, timeframe: int) -> None:
        from engine.kernels import KINDS

        self.source, self.symbol, self.timeframe = source, symbol, timeframe
        self.shm = source.bars[symbol]
        self.candles = np.empty(0, dtype=ohlc_dtype)
        self.pending = np.empty(0, dtype=ohlc_dtype)  # base bars of the candle not yet closed
        self._next = self.shm.span()[0]
        self.decls = list(source.indicators.get(symbol, ()))
        self.kernels = [KINDS[d["kind"]](*d["params"]) for d in self.decls]
        self.values: list[list[np.ndarray]] = [[np.empty(0) for _ in d["outputs"]]
                                               for d in self.decls]
        self.refresh()

    def refresh(self) -> int:
        """Take in bars closed since the last call; return how many candles closed."""
        rows, self._next = _rows_since(self.shm, self._next)
        if not len(rows):
            return 0
        base = self.source.timeframe
        if self.timeframe == base:
            new = rows
        else:
            pool = np.concatenate([self.pending, rows])
            res = resample_bars(pool, self.timeframe)
            # The newest candle is closed only once its period's last base bar is in.
            done = len(res) if res["time"][-1] + self.timeframe <= pool["time"][-1] + base \
                else len(res) - 1
            new = res[:done]
            cut = res["time"][done] if done < len(res) else None
            self.pending = pool[pool["time"] >= cut] if cut is not None else pool[:0]
        if len(new):
            self.candles = np.concatenate([self.candles, new])
            for i, (d, k) in enumerate(zip(self.decls, self.kernels, strict=True)):
                out = k.update(*[new[f].astype(np.float64) for f in d["fields"]])
                outs = out if isinstance(out, tuple) else (out,)
                self.values[i] = [np.concatenate([v, o]) for v, o in
                                  zip(self.values[i], outs, strict=True)]
        return len(new)

    def forming(self) -> list[float] | None:
        """The candle still forming (from the engine's forming bar and the pending base bars)."""
        f = self.source.forming.get(self.symbol)
        parts = [] if not len(self.pending) else [[
            float(self.pending["time"][0]), float(self.pending["open"][0]),
            float(self.pending["high"].max()), float(self.pending["low"].min()),
            float(self.pending["close"][-1]), float(self.pending["volume"].sum())]]
        if f is not None:
            parts.append(list(f))
        if not parts:
            return None
        t = period_start(int(parts[0][0]), self.timeframe)
        parts = [p for p in parts if period_start(int(p[0]), self.timeframe) == t]
        return [float(t), parts[0][1], max(p[2] for p in parts), min(p[3] for p in parts),
                parts[-1][4], sum(p[5] for p in parts)]

    def payload(self, start: int, stop: int) -> dict[str, Any]:
        """Candles start..stop (positions) and the indicator values there, for the page."""
        c = self.candles[start:stop]
        lines = {}
        for d, vals in zip(self.decls, self.values, strict=True):
            for out, v in zip(d["outputs"], vals, strict=True):
                key = d["name"] if len(d["outputs"]) == 1 else f"{d['name']}.{out}"
                seg = v[start:stop]
                ok = np.isfinite(seg)
                lines[key] = np.column_stack([c["time"][ok].astype(np.float64),
                                              seg[ok]]).tolist()
        return {"candles": np.column_stack([
            c["time"].astype(np.float64), c["open"], c["high"], c["low"], c["close"],
            c["volume"]]).tolist(), "lines": lines, "first": start, "total": len(self.candles)}
