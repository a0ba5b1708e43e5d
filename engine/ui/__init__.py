"""The live web dashboard: candles, indicators, fills, orders, account, feed health and results.

`engine run ... --ui [HOST:]PORT` (or `engine.run(..., ui="8050")`) publishes the run on a board in
shared memory (`RunBoard`) and serves the dashboard from a process of its own, which reads the
run's bar and tick segments in place. `engine ui` (`serve_ui`) attaches to a running engine by its
run file, or browses accounts and saved backtest and sweep results. Every page and the websocket
need the access token printed with the URL; the server listens on 127.0.0.1 unless told otherwise.
"""

from engine.ui._board import RunBoard, running_engines
from engine.ui._main import UiServer, open_ui, serve_ui
from engine.ui._server import UiAddressError, check_address, parse_address

__all__ = ["RunBoard", "UiAddressError", "UiServer", "check_address", "open_ui",
           "parse_address", "running_engines", "serve_ui"]
