"""The HTML report of a walk-forward run: the window table and the stitched out-of-sample run.

One self-contained file, built from the backtest report's pieces (`engine.backtests.report`): a
header naming the run a walk-forward, a table with one line per window (training and test
dates in ISO 8601 UTC, the parameters chosen, how many combinations they were chosen from, the
in-sample metric and the window's out-of-sample statistics), then the stitched out-of-sample
price, equity and drawdown charts, its statistics and its trades. This module only reads the
result it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.backtests.report import (
    _CSS,
    _charts,
    _esc,
    _num,
    _stats_html,
    _trades_html,
    write_page,
)

__all__ = ["write_wf_report"]

# Out-of-sample statistics shown per window (keys of its `out_of_sample`).
_WINDOW_STATS = ("return_pct", "sharpe", "max_drawdown_pct", "num_trades", "final_equity")


def _header(result: Any) -> str:
    from engine.sampler import format_timeframe

    oos = result.oos
    frame = f" · {format_timeframe(oos.timeframe)} bars" if getattr(oos, "timeframe", None) \
        else ""
    return (f"<h1>{_esc(result.strategy)} · walk-forward</h1><div class='sub'>"
            f"{len(result.windows)} windows, parameters chosen by in-sample "
            f"{_esc(result.metric)} · {_esc(', '.join(oos.symbols))}{frame} · the charts, "
            "statistics and trades below are the stitched out-of-sample run</div>")


def _windows_html(result: Any) -> str:
    head = (["#", "train from", "train to", "test from", "test to", "parameters", "trials",
             f"in-sample {result.metric}"]
            + [f"OOS {k.replace('_', ' ')}" for k in _WINDOW_STATS])
    left = {1, 2, 3, 4, 5}
    rows = ["<tr>" + "".join(f"<th class='{'l' if i in left else ''}'>{_esc(h)}</th>"
                             for i, h in enumerate(head)) + "</tr>"]
    for n, w in enumerate(result.windows, 1):
        params = ", ".join(f"{k}={v}" for k, v in (w.get("params") or {}).items())
        if not params:
            params = f"none ({w.get('skipped', 'no choice')})"
        cells = [str(n), w["train_start_iso"], w["train_end_iso"], w["test_start_iso"],
                 w["test_end_iso"], params, str(w.get("n_trials", "")), _num(w["in_sample"])]
        cells += [_num(w["out_of_sample"].get(k)) for k in _WINDOW_STATS]
        rows.append("<tr>" + "".join(f"<td class='{'l' if i in left else ''}'>{_esc(c)}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    return ("<h2>Windows</h2><div class='trades'><table id='windows'>" + "".join(rows)
            + "</table></div>")


def write_wf_report(result: Any, path: str | Path) -> Path:
    """Write the HTML report of a walk-forward `result` (a `WalkForwardResult`) to `path` and
    return the path."""
    from bokeh.models import Div

    path = Path(path)
    charts = _charts(result.oos)
    if charts is None:
        charts = Div(text="<p class='note'>No window traded: nothing to chart.</p>",
                     name="charts")
    oos = result.oos
    variables = {
        "css": _CSS,
        "page_title": _esc(f"{result.strategy} · walk-forward"),
        "header": _header(result) + _windows_html(result),
        "tables": (_stats_html(dict(oos.stats or {})).replace(
            "<h2>Statistics</h2>", "<h2>Out-of-sample statistics (stitched)</h2>")
            + _trades_html(list(oos.trades or []))),
    }
    return write_page(charts, f"{result.strategy} walk-forward", variables, path)
