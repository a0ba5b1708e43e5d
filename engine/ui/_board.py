"""What a run publishes for its dashboard: a run file naming its shared memory, and a board segment
of status rows (feed health, each strategy's state, its log lines).

Every `engine run` publishes them (so `engine ui` can attach to it later); with `--ui` the run also
starts the dashboard in a process of its own (`python -m engine.ui attach`). The run's own process
does only cheap things here: it writes one JSON row to shared memory every `EVERY` seconds and one
per strategy log line; the dashboard process reads the feed's bar and tick segments and this
board in place. Nothing here awaits the dashboard or blocks the feed: a dashboard that is slow,
stuck or gone costs the run nothing but the rows it never reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import trio

from engine.shm import ShmArray, ShmError
from engine.ui._messages import (
    FeedEvent,
    IndicatorDecl,
    LogLine,
    RunInfo,
    RunStatus,
    StrategyState,
)

__all__ = ["RunBoard", "board_dtype", "runs_dir", "running_engines"]

log = logging.getLogger("engine.ui")

# One row: its absolute index, the epoch seconds it was written, what it holds and its JSON.
# 8 KiB holds a status of dozens of symbols and strategies; longer texts are cut (and say so).
TEXT_BYTES = 8184
board_dtype = np.dtype([("index", np.int64), ("time", np.float64), ("kind", "S8"),
                        ("text", f"S{TEXT_BYTES}")])
BOARD_ROWS = 1024  # rolling: the newest half stays when it fills
EVERY = 0.2  # seconds between status rows: the dashboard's feed-health refresh


def runs_dir() -> Path:
    """The folder of run files, one `<pid>.json` per running engine."""
    from engine.paths import data_dir

    return data_dir() / "runs"


def running_engines() -> list[RunInfo]:
    """The run files of engines still running (newest first); files of dead ones are removed."""
    found = []
    folder = runs_dir()
    if not folder.is_dir():
        return []
    for path in folder.glob("*.json"):
        try:
            info = RunInfo.model_validate_json(path.read_bytes())
            os.kill(info.pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)  # left by a run that was killed outright
            continue
        except (OSError, ValueError):
            continue  # not readable, or not a run file
        found.append(info)
    return sorted(found, key=lambda i: i.started, reverse=True)


def _declared(runner: Any) -> list[IndicatorDecl]:
    """The indicators a strategy declared over fields of the run's own bars (the ones a chart
    of those bars can overlay), as SignalSet specs."""
    out = []
    for src in getattr(runner.context, "_sources", ()):
        if src.lines or src.key != src.symbol:
            continue  # over other lines, or over a higher timeframe: not a bar overlay
        ind = src.indicator
        out.append(IndicatorDecl(symbol=src.symbol, kind=ind.kind, fields=list(src.fields),
                                 params=[p for p in ind._params()
                                         if isinstance(p, bool | int | float)],
                                 outputs=list(ind.outputs)))
    return out


class _LogRows(logging.Handler):
    """Strategy log lines (loggers `strategy.<name>`) as board rows."""

    def __init__(self, board: RunBoard) -> None:
        super().__init__(logging.INFO)
        self.board = board

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.board.push(LogLine(t=record.created, level=record.levelname,
                                    strategy=record.name.removeprefix("strategy."),
                                    message=record.getMessage()))
        except Exception:  # noqa: BLE001 - a log line must never break the strategy
            self.handleError(record)


class RunBoard:
    """A run's dashboard: its board segment, run file and (with `serve`) dashboard process.

    `host`/`port` is where the dashboard listens (port 0: a free one); `allow_remote` must be
    set for an address other than loopback. `token` is the access token (default: random).
    `serve=False` only publishes the run, for `engine ui` to attach to."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False,
                 token: str | None = None, account: str | None = None,
                 announce: Any = None, serve: bool = True) -> None:
        from engine.ui._server import check_address, new_token

        check_address(host, allow_remote)
        self.serve = serve
        self.host, self.port, self.allow_remote = host, port, allow_remote
        self.token = token or new_token()
        self.account = account
        self.announce = announce or (lambda url: print(f"dashboard: {url}", file=sys.stderr,
                                                       flush=True))
        self.url: str | None = None
        self.shm: ShmArray | None = None
        self.path: Path | None = None
        self.process: subprocess.Popen | None = None
        self.reconnects = 0
        self.actors: dict[str, dict[str, Any]] = {}  # --actors: each strategy's last report
        self.gaps = 0
        self._lock = threading.Lock()
        self._handler = _LogRows(self)

    # -- rows ----------------------------------------------------------------------------------

    def push(self, message: Any) -> None:
        """Append one row (a RunStatus, LogLine or FeedEvent); safe from any thread
        (strategies in threads log too)."""
        shm = self.shm
        if shm is None:
            return
        text = message.model_dump_json().encode()
        if len(text) > TEXT_BYTES:
            if isinstance(message, LogLine):
                message = message.model_copy(update={"message": message.message[:2000] + "…"})
                text = message.model_dump_json().encode()
            if len(text) > TEXT_BYTES:
                return  # a status of thousands of strategies: the page keeps the last one
        row = np.zeros(1, dtype=board_dtype)
        row["time"], row["kind"], row["text"] = message.t, message.type.encode(), text
        with self._lock:
            shm.push(row)

    def on_batch(self, quotes: list, closed: list, events: list) -> None:
        """Feed subscriber: only status changes (disconnects, reconnects, gaps) cost anything."""
        for e in events:
            if e.status == "reconnected":
                self.reconnects += 1
            elif e.status == "gap_filled":
                self.gaps += 1
            self.push(FeedEvent(t=e.time, status=e.status, symbols=list(e.symbols),
                                reason=e.reason))

    # -- lifetime ------------------------------------------------------------------------------

    def attach(self, feed: Any) -> None:
        """Create the board segment and the run file for `feed` (the run's on_feed hook)."""
        self.feed = feed
        if self.publish(provider=feed.provider.name, symbols=list(feed.symbols),
                        timeframe=feed.timeframe, tokens=feed.tokens(), started=feed.clock.now()):
            feed.subscribe(self.on_batch)

    def publish(self, *, provider: str, symbols: list[str], timeframe: int,
                tokens: dict[str, Any], started: float, logs: bool = True) -> bool:
        """Create the board segment and write the run file naming it and the feed's `tokens`;
        with `logs`, strategy log lines of this process become rows. False (said in one line)
        when the segment or the run file cannot be made: the run goes on without them."""
        try:
            self.shm = ShmArray.create(board_dtype, BOARD_ROWS, start=0, rolling=True)
        except (OSError, ShmError) as exc:
            return self._without(f"its board segment cannot be made ({exc})")
        info = RunInfo(pid=os.getpid(), started=started, provider=provider, symbols=symbols,
                       timeframe=timeframe, tokens=tokens, board=self.shm.token,
                       account=self.account)
        try:
            running_engines()  # sweeps the run files of runs killed outright
            folder = runs_dir()
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path = folder / f"{os.getpid()}.json"
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(info.model_dump_json())
            tmp.replace(self.path)
        except OSError as exc:
            if self.path is not None:
                with contextlib.suppress(OSError):
                    self.path.with_suffix(".tmp").unlink(missing_ok=True)
            self.path = None
            return self._without(f"its run file cannot be written ({exc.filename}: "
                                 f"{exc.strerror})")
        if logs:
            logging.getLogger("strategy").addHandler(self._handler)
        return True

    def _without(self, why: str) -> bool:
        if self.serve:
            log.error("no dashboard: %s; the run goes on without it", why)
        else:
            log.warning("engine ui cannot attach to this run: %s", why)
        self.close()
        return False

    async def run(self, feed: Any, runners: list[Any]) -> None:
        """Start the dashboard process (with `serve`), then write a status row every EVERY
        seconds until cancelled; stop the process and remove the run file and segment on the
        way out."""
        last = [feed.stats.quotes, feed.clock.now()]

        def status() -> RunStatus:
            now = feed.clock.now()
            rate = (feed.stats.quotes - last[0]) / max(now - last[1], 1e-9)
            last[:] = feed.stats.quotes, now
            return self._status(feed, runners, rate)

        await self.rows(status)

    async def rows(self, status: Any) -> None:
        """`run` for any source of status: push `status()` (a RunStatus) every EVERY seconds."""
        if self.shm is None:
            return  # publishing failed and said why
        try:
            if self.serve:
                self._start_process()
                await trio.to_thread.run_sync(self._wait_ready, abandon_on_cancel=True)
            while True:
                self.push(status())
                await trio.sleep(EVERY)
        finally:
            self.close()

    def _status(self, feed: Any, runners: list[Any], rate: float) -> RunStatus:
        st = feed.stats
        strategies = []
        for r in runners:
            s = r.stats
            strategies.append(StrategyState(
                name=r.name, quotes=s.quotes, bars=s.bars, error=s.error,
                coalesced=r.mailbox.coalesced, off_loop=s.off_loop, lag=s.lag,
                state="failed" if s.error else "stopped" if s.stopped else
                      "in its thread" if s.off_loop else "running",
                indicators=_declared(r)))
        return RunStatus(t=feed.clock.now(), quotes=st.quotes, ticks=st.ticks, bars=st.bars,
                         rejected=st.rejected, last_error=st.last_error, quotes_per_s=rate,
                         status=dict(feed.status), reconnects=self.reconnects, gaps=self.gaps,
                         strategies=strategies)

    def _start_process(self) -> None:
        env = dict(os.environ, ENGINE_UI_TOKEN=self.token)
        cmd = [sys.executable, "-m", "engine.ui", "attach", str(self.path), "--host", self.host,
               "--port", str(self.port)]
        if self.allow_remote:
            cmd.append("--allow-remote")
        # Its own session: a Ctrl-C meant for the run reaches the dashboard only through close().
        self.process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                                        start_new_session=True)

    def _wait_ready(self) -> None:
        proc = self.process
        assert proc is not None
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("http"):
            log.error("the dashboard did not start (its error is above); the run goes on "
                      "without it")
            return
        self.url = line
        self.announce(line)

    def discard(self) -> None:
        """Just before the process ends outright (a callback stuck on the loop): remove the run
        file and the board segment's name; the dashboard process sees the run gone and ends."""
        path, shm = self.path, self.shm
        if path is not None:
            path.unlink(missing_ok=True)
        if shm is not None:
            shm.unlink()

    def close(self) -> None:
        """Stop the dashboard process; remove the run file and the board segment."""
        logging.getLogger("strategy").removeHandler(self._handler)
        feed = getattr(self, "feed", None)
        if feed is not None:
            feed.unsubscribe(self.on_batch)
        proc, self.process = self.process, None
        if proc is not None:
            # Closing its stdin tells it to stop; a dashboard that does not is ended.
            try:
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
        with self._lock:
            shm, self.shm = self.shm, None
        if shm is not None:
            shm.close()
            shm.unlink()
