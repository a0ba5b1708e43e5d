"""`open_ui` and `serve_ui`: the public functions behind `engine ui` and `engine run --ui`."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from engine.ui._app import Dashboard
from engine.ui._board import running_engines
from engine.ui._live import LiveSource
from engine.ui._messages import RunInfo
from engine.ui._server import check_address, new_token, serve

__all__ = ["UiServer", "open_ui", "serve_ui", "resolve_run"]


class NoRunningEngine(LookupError):
    """`attach` names no engine that is running."""


@dataclass
class UiServer:
    """A serving dashboard: where it listens and its access token."""

    host: str
    port: int
    token: str
    dashboard: Dashboard

    @property
    def url(self) -> str:
        """The page's address, token included (what to open in a browser)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.token}"


def resolve_run(attach: str | int | Path | RunInfo | None) -> RunInfo | None:
    """The run file of the engine to attach to: a path, a pid, "latest", or a RunInfo
    (None: nothing to attach)."""
    if attach is None or isinstance(attach, RunInfo):
        return attach
    text = str(attach)
    if text.endswith(".json"):
        try:
            return RunInfo.model_validate_json(Path(text).read_bytes())
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a run file"
            raise NoRunningEngine(f"{text}: {reason}") from None
    running = running_engines()
    if text == "latest":
        if not running:
            raise NoRunningEngine("no engine is running (start one with "
                                  "`engine run strat.py`)")
        return running[0]
    for info in running:
        if str(info.pid) == text:
            return info
    raise NoRunningEngine(f"no engine with pid {text} is running (running: "
                          f"{', '.join(str(i.pid) for i in running) or 'none'})")


def _check_results(results: Sequence[Any]) -> None:
    for path in results:
        if not hasattr(path, "to_json") and not Path(path).is_file():
            raise FileNotFoundError(f"result file {path} does not exist")


@asynccontextmanager
async def open_ui(*, attach: str | int | Path | RunInfo | None = None,
                  results: Sequence[Any] = (), host: str = "127.0.0.1", port: int = 0,
                  allow_remote: bool = False, token: str | None = None
                  ) -> AsyncIterator[UiServer]:
    """Serve the dashboard in the current trio run while the block lasts; yield its UiServer.

    `attach` names a running engine (its run file path, its pid, or "latest"); `results` are
    saved `engine backtest --json` / `engine sweep --json` files to browse, or result objects
    (`engine.backtest(...)`, `engine.optimize(...)`; a backtest's trades are then drawn on its
    price bars). The server listens
    on `host`:`port` (port 0: a free one); a host other than loopback needs `allow_remote`.
    `token` is the access token (default: a random one)."""
    check_address(host, allow_remote)
    token = token or new_token()
    info = resolve_run(attach)
    _check_results(results)
    source = LiveSource(info) if info is not None else None
    try:
        dashboard = Dashboard(source, list(results))
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(serve, host, port, token, dashboard.handle,
                                        dashboard.handle_ws)
            nursery.start_soon(dashboard.poll)
            try:
                yield UiServer(host, bound, token, dashboard)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        if source is not None:
            source.close()


def serve_ui(*, attach: str | int | Path | RunInfo | None = None,
             results: Sequence[Any] = (), host: str = "127.0.0.1", port: int = 0,
             allow_remote: bool = False, token: str | None = None,
             ready: Callable[[str], None] | None = None, until_stdin_closes: bool = False) -> None:
    """Serve the dashboard until Ctrl-C, or until the attached engine exits (see `open_ui` for
    the arguments). `ready` is called with the URL once it listens (default: print it).
    `until_stdin_closes`: also stop when standard input closes (the run that started it ended)."""

    async def main() -> None:
        async with open_ui(attach=attach, results=results, host=host, port=port,
                           allow_remote=allow_remote, token=token) as ui:
            (ready or print)(ui.url)
            async with trio.open_nursery() as nursery:
                if until_stdin_closes:
                    async def stdin_closed() -> None:
                        await trio.to_thread.run_sync(sys.stdin.buffer.read,
                                                      abandon_on_cancel=True)
                        nursery.cancel_scope.cancel()
                    nursery.start_soon(stdin_closed)
                source = ui.dashboard.source
                if source is not None:
                    async def engine_gone() -> None:
                        # The run unlinks its segments and run file as it ends; a run killed
                        # outright leaves only its pid to go by.
                        while True:
                            await trio.sleep(0.5)
                            if not source.alive():
                                nursery.cancel_scope.cancel()
                                return
                    nursery.start_soon(engine_gone)
                else:
                    await trio.sleep_forever()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
