"""The dashboard application: its pages, its JSON API and the websocket that pushes live updates.

One poller reads the engine's shared memory every `POLL` seconds and wakes the page connections;
each connection then sends its page one coalesced message with what changed for the symbol and
timeframe it shows (closed candles, the forming one, indicator values), plus feed health, the
strategies' state and log lines, and the account when its ledger grew. A page that reads slowly
gets fewer, larger messages; the engine never knows.
"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import trio

from engine.shm import ShmError
from engine.ui._live import Chart, LiveSource
from engine.ui._messages import WatchChart
from engine.ui._server import Response, WebSocket

__all__ = ["Dashboard"]

log = logging.getLogger("engine.ui")

POLL = 0.02  # seconds between reads of shared memory: the floor of the page's latency
ACCOUNT_EVERY = 0.1  # seconds between checks of the account's ledger
INITIAL = 2000  # candles sent when a chart opens; older ones as the page pans left
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".txt": "text/plain",
          ".LICENSE": "text/plain; charset=utf-8"}


def _static() -> dict[str, Path]:
    folder = resources.files("engine.ui") / "static"
    return {p.name: Path(str(p)) for p in folder.iterdir() if p.is_file()}


def _result_name(item: Any) -> str:
    if isinstance(item, Path):
        return item.name
    return f"{type(item).__name__} of {getattr(item, 'strategy', '?')}"


MAX_CANDLES = 3000  # per symbol, as the HTML report draws them (engine.backtests.report)


def _price_bars(bars: dict[str, Any]) -> dict[str, list]:
    """Each symbol's bars as candles [time s, open, high, low, close], runs of k bars merged so
    at most MAX_CANDLES remain, as the HTML report merges them, so a long run stays light."""
    out = {}
    for sym, b in bars.items():
        n = len(b)
        if not n:
            continue
        k = max(1, -(-n // MAX_CANDLES))
        starts = np.arange(0, n, k)
        ends = np.r_[starts[1:] - 1, n - 1]
        out[sym] = np.column_stack([
            b["time"][starts].astype(np.float64), b["open"][starts].astype(np.float64),
            np.maximum.reduceat(b["high"], starts).astype(np.float64),
            np.minimum.reduceat(b["low"], starts).astype(np.float64),
            b["close"][ends].astype(np.float64)]).tolist()
    return out


class Dashboard:
    """The pages of one dashboard: a live engine (`source`), accounts, and saved results."""

    def __init__(self, source: LiveSource | None = None, results: list[Any] | None = None
                 ) -> None:
        self.source = source
        # Saved files (paths), or result objects of this process (a BacktestResult brings its
        # bars, so its trades are drawn on the price).
        self.results = [r if hasattr(r, "to_json") else Path(r) for r in results or []]
        self.static = _static()
        self.changed = trio.Event()
        self.charts: dict[tuple[str, int], Chart] = {}
        self.account: dict[str, Any] | None = None
        self.account_version = 0
        self.equity: list[list[float]] = []  # [epoch s, equity] sampled live
        self.equity_epoch = 0  # grows when the curve is thinned: pages take it anew
        self._ledger_stamp: tuple[int, int] | None = None

    # -- polling -------------------------------------------------------------------------------

    async def poll(self) -> None:
        """Read the engine's memory and its account until cancelled; wake connections."""
        if self.source is None:
            return
        next_account = 0.0
        while True:
            try:
                changed = self.source.poll()
            except ShmError as exc:  # a segment stuck mid-roll by a writer that died
                log.warning("reading the run's memory failed: %s", exc)
                changed = False
            now = time.monotonic()
            if now >= next_account:
                next_account = now + ACCOUNT_EVERY
                changed |= self._poll_account()
            if changed:
                self.changed.set()
                self.changed = trio.Event()
            await trio.sleep(POLL)

    def _poll_account(self) -> bool:
        src = self.source
        if src is None or not src.account:
            return False
        from engine.clearing.ledger import LOG_NAME
        from engine.paths import account_dir

        try:
            st = (account_dir(src.account) / LOG_NAME).stat()
        except OSError:
            return False
        stamp = (st.st_size, st.st_mtime_ns)
        changed = stamp != self._ledger_stamp
        if changed:
            report = self._account_report(src.account)
            if report is not None:
                self._ledger_stamp = stamp
                self.account = report
                self.account_version += 1
        if self.account is not None:
            # Live equity: the ledger's cash and positions at the feed's latest prices.
            a = self.account
            eq = a["cash"] + sum(p["quantity"] * src.last.get(p["symbol"], p["mark"])
                                 for p in a["positions"])
            now = time.time()
            if not self.equity or changed or (abs(self.equity[-1][1] - eq) > 1e-9
                                              and now - self.equity[-1][0] >= 0.5):
                self.equity.append([now, eq])
                if len(self.equity) > 20_000:  # keep every other point of a long session
                    self.equity[:] = self.equity[::2]
                    self.equity_epoch += 1
                return True
        return changed

    @staticmethod
    def _account_report(name: str) -> dict[str, Any] | None:
        from engine.clearing.ledger import LedgerError
        from engine.clearing.report import AccountNotFound, account_report

        try:
            return account_report(name)
        except (AccountNotFound, LedgerError, ValueError, OSError):
            return None

    def chart(self, symbol: str, timeframe: int) -> Chart:
        src = self.source
        assert src is not None
        key = (symbol, timeframe)
        chart = self.charts.get(key)
        if chart is None or len(chart.decls) != len(src.indicators.get(symbol, ())):
            chart = self.charts[key] = Chart(src, symbol, timeframe)
        else:
            chart.refresh()
        return chart

    # -- HTTP ----------------------------------------------------------------------------------

    async def handle(self, target: str, headers: dict[str, str]) -> Response:
        url = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path in ("/", "/index.html"):
            return self._file("index.html")
        if path.startswith("/static/"):
            return self._file(path.removeprefix("/static/"))
        try:
            if path == "/api/info":
                return Response.json(self.info())
            if path == "/api/bars":
                return Response.json(self.bars(q))
            if path == "/api/account":
                report = self._account_report(q.get("name", ""))
                if report is None:
                    return Response.json({"error": f"no readable account {q.get('name')!r}"}, 404)
                return Response.json(report)
            if path == "/api/result":
                return Response.json(self.result(int(q.get("i", "-1"))))
        except (KeyError, ValueError, IndexError, OSError) as exc:
            return Response.json({"error": str(exc)}, 400)
        return Response(404, b"not found", "text/plain")

    def _file(self, name: str) -> Response:
        path = self.static.get(name)
        if path is None:
            return Response(404, b"not found", "text/plain")
        kind = _TYPES.get(path.suffix, "application/octet-stream")
        return Response(200, path.read_bytes(), kind)

    def info(self) -> dict[str, Any]:
        from engine.paths import list_accounts

        src = self.source
        try:
            accounts = list_accounts()
        except OSError:
            accounts = []
        live = None
        if src is not None:
            base = src.timeframe
            tfs = [base] + [t for t in (5, 15, 60, 300, 900, 3600, 14400, 86400)
                            if t > base and t % base == 0]
            live = {"pid": src.pid, "provider": src.info.provider,
                    "symbols": src.symbols, "timeframe": base, "timeframes": tfs[:6],
                    "account": src.account}
        return {"live": live, "accounts": accounts,
                "results": [{"i": i, "name": _result_name(r)} for i, r in enumerate(self.results)]}

    def bars(self, q: dict[str, str]) -> dict[str, Any]:
        """Candles of a live chart before candle `before` (a position), for panning left."""
        if self.source is None:
            raise ValueError("no running engine attached")
        sym, tf = q["symbol"], int(q["tf"])
        if sym not in self.source.symbols:
            raise ValueError(f"unknown symbol {sym!r}")
        if tf <= 0 or tf % self.source.timeframe:
            raise ValueError(f"timeframe {tf} s is not a multiple of the run's "
                             f"{self.source.timeframe} s")
        chart = self.chart(sym, tf)
        stop = min(int(q.get("before", len(chart.candles))), len(chart.candles))
        n = min(int(q.get("n", INITIAL)), 20_000)
        return chart.payload(max(0, stop - n), stop)

    def result(self, i: int) -> dict[str, Any]:
        """A saved backtest (`engine backtest --json`) or sweep (`engine sweep --json`)."""
        if not 0 <= i < len(self.results):
            raise IndexError(f"no result {i}")
        item = self.results[i]
        name = _result_name(item)
        if isinstance(item, Path):
            data = json.loads(item.read_text())
        else:
            data = json.loads(item.to_json())
        if "rows" in data and "metric" in data:
            return {"kind": "sweep", "name": name, **data}
        if "out_of_sample" in data:
            return {"kind": "walk_forward", "name": name, **data}
        bars = getattr(item, "bars", None) or {}
        return {"kind": "backtest", "name": name, **data, "bars": _price_bars(bars)}

    # -- websocket -----------------------------------------------------------------------------

    async def handle_ws(self, path: str, headers: dict[str, str], ws: WebSocket) -> None:
        if path != "/ws" or self.source is None:
            return
        view: dict[str, Any] = {}
        wake = trio.Event()

        async def listen() -> None:
            while True:
                msg = await ws.receive()
                if msg is None:
                    return
                try:
                    watch = WatchChart.model_validate(msg)
                except ValueError:
                    continue  # not a message this page sends: ignored
                base = self.source.timeframe
                tf = watch.tf or base
                if watch.symbol in self.source.symbols and tf % base == 0:
                    view.clear()
                    view.update(symbol=watch.symbol, tf=tf)
                    wake.set()

        async with trio.open_nursery() as nursery:
            async def talk() -> None:
                nonlocal wake
                sent: dict[str, Any] = {}
                while not ws.closed:
                    # Taken before the update is built: a change made meanwhile wakes us at once.
                    changed = self.changed
                    msg = self._update(view, sent)
                    if msg:
                        await ws.send(msg)
                    with trio.move_on_after(1.0):
                        async with trio.open_nursery() as n:
                            async def first(ev: trio.Event, nn: trio.Nursery = n) -> None:
                                await ev.wait()
                                nn.cancel_scope.cancel()
                            n.start_soon(first, changed)
                            n.start_soon(first, wake)
                    if wake.is_set():
                        wake = trio.Event()
                nursery.cancel_scope.cancel()

            nursery.start_soon(talk)
            await listen()
            nursery.cancel_scope.cancel()

    def _update(self, view: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
        """One coalesced message: what changed since `sent` (which it updates)."""
        src = self.source
        assert src is not None
        msg: dict[str, Any] = {"type": "update", "t": time.time()}
        if view:
            key = (view["symbol"], view["tf"])
            chart = self.chart(*key)
            if sent.get("key") != key or sent.get("chart") is not chart:
                sent.update(key=key, chart=chart, n=len(chart.candles), forming=None)
                msg["reset"] = dict(chart.payload(max(0, len(chart.candles) - INITIAL),
                                                  len(chart.candles)), symbol=key[0], tf=key[1])
            elif len(chart.candles) > sent["n"]:
                msg["append"] = chart.payload(sent["n"], len(chart.candles))
                sent["n"] = len(chart.candles)
            forming = chart.forming()
            if forming != sent.get("forming"):
                msg["forming"] = forming
                sent["forming"] = forming
        # Feed health with each status row the run writes (every 0.2 s), not with every tick:
        # the page re-lays its tables for it.
        stamp = src.status.get("t")
        if stamp != sent.get("health_t") or "health" not in sent:
            sent["health_t"] = stamp
            msg["health"] = sent["health"] = src.health(time.time())
        strategies = src.status.get("strategies")
        if strategies != sent.get("strategies"):
            msg["strategies"] = sent["strategies"] = strategies
        if src.logs and sent.get("log") is not src.logs[-1]:
            last = sent.get("log")
            lines = list(src.logs)
            if last is not None and last in lines:
                lines = lines[len(lines) - lines[::-1].index(last):]
            msg["log"] = lines[-200:]
            sent["log"] = src.logs[-1]
        if self.account is not None and sent.get("account") != self.account_version:
            sent["account"] = self.account_version
            msg["account"] = self.account
        if sent.get("equity_epoch") != self.equity_epoch:
            sent.update(equity_epoch=self.equity_epoch, equity=0)
            msg["equity_reset"] = True
        if self.equity and sent.get("equity", 0) < len(self.equity):
            msg["equity"] = self.equity[sent.get("equity", 0):]
            sent["equity"] = len(self.equity)
        return msg if len(msg) > 2 else {}
