"""The HTML report of a backtest: one self-contained file with the price and trades, the equity
curve, the drawdown, the statistics and the trade list.

Charts are bokeh plots with bokeh's JavaScript inlined, so the file opens offline, anywhere; the
price, equity and drawdown charts share one time axis (pan or zoom one, the others follow) and
their y axes fit the visible window. Long runs are thinned before they are drawn: price bars are
merged into at most `MAX_CANDLES` candles per symbol, the equity and drawdown curves keep each
bucket's lowest and highest point (so the worst drawdown always shows), and at most
`MAX_TRADE_MARKS` trades are marked; the tables keep every statistic and up to `MAX_TRADE_ROWS`
trades. The file stays a few megabytes whatever the run's length. This module only reads the
result it is given.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_report", "MAX_CANDLES", "MAX_TRADE_MARKS", "MAX_TRADE_ROWS"]

MAX_CANDLES = 3000  # per symbol: about two per horizontal pixel of a wide screen
MAX_CURVE_BUCKETS = 4000  # equity and drawdown: two points (low, high) per bucket
MAX_TRADE_MARKS = 10_000
MAX_TRADE_ROWS = 2000

_UP, _DOWN = "#26a69a", "#ef5350"  # candle colors
_LONG, _SHORT = "#1565c0", "#ff8f00"  # trade colors by side
_WIN, _LOSS = "#2e7d32", "#c62828"

_TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save,crosshair"


# -- thinning -------------------------------------------------------------------------------------


def candles(bars: np.ndarray, limit: int = MAX_CANDLES) -> tuple[dict[str, np.ndarray], int]:
    """Merge runs of `k` consecutive bars into one candle so at most `limit` remain; return the
    candle columns (time in epoch ms) and `k`."""
    n = len(bars)
    k = max(1, math.ceil(n / limit)) if n else 1
    starts = np.arange(0, n, k)
    if k == 1:
        cols = {f: np.asarray(bars[f], dtype=np.float64) for f in ("open", "high", "low", "close")}
        times = bars["time"]
    else:
        cols = {
            "open": bars["open"][starts].astype(np.float64),
            "high": np.maximum.reduceat(bars["high"], starts).astype(np.float64),
            "low": np.minimum.reduceat(bars["low"], starts).astype(np.float64),
            "close": bars["close"][np.r_[starts[1:] - 1, n - 1]].astype(np.float64)
            if n else np.zeros(0),
        }
        times = bars["time"][starts]
    cols["time"] = np.asarray(times, dtype=np.float64) * 1000.0
    return cols, k


def envelope(times: np.ndarray, values: np.ndarray, buckets: int = MAX_CURVE_BUCKETS
             ) -> tuple[np.ndarray, np.ndarray]:
    """Keep the lowest and highest point of each of `buckets` equal runs (in time order), plus
    the first and last point; return times and values."""
    n = len(values)
    if n <= 2 * buckets:
        return times, values
    k = math.ceil(n / buckets)
    pad = (-n) % k
    v = np.concatenate([values, np.full(pad, np.nan)]).reshape(-1, k)
    base = np.arange(v.shape[0]) * k
    low = np.argmin(np.where(np.isnan(v), np.inf, v), axis=1)
    high = np.argmax(np.where(np.isnan(v), -np.inf, v), axis=1)
    keep = np.unique(np.concatenate([base + low, base + high, [0, n - 1]]))
    keep = keep[keep < n]
    return times[keep], values[keep]


def _spread(n: int, limit: int) -> np.ndarray:
    """Indices of at most `limit` items spread evenly over `n`."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


# -- formatting -----------------------------------------------------------------------------------


def _when(t: Any, period: int | None = None) -> str:
    from engine.timefmt import iso

    if t is None or (isinstance(t, float) and not math.isfinite(t)):
        return "open"
    return iso(float(t), period) or "open"


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool | str):
        return str(v)
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "–"
    if abs(f) >= 1000:
        return f"{f:,.2f}"
    if abs(f) >= 1:
        return f"{f:.{digits}f}".rstrip("0").rstrip(".")
    return f"{f:.{digits}g}"


_STAT_UNITS = (("_pct", " [%]"), ("_days", " [days]"))


_LABELS = {"pnl": "P&L", "num_trades": "Trades", "fees": "Fees"}


def _stat_name(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    label, unit = key, ""
    for suffix, text in _STAT_UNITS:
        if key.endswith(suffix):
            label, unit = key[: -len(suffix)], text
    return label.replace("_", " ").capitalize() + unit


def _stat_value(key: str, value: Any) -> str:
    if key in ("start", "end", "start_time", "end_time") and isinstance(
            value, int | float | np.integer) and value:
        return _when(value)
    return _num(value, 2 if key.endswith("_pct") else 4)


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


# -- charts ---------------------------------------------------------------------------------------

# Fit every y range in `ys` to the data inside the visible x window (lo/hi fields per source).
_FIT_Y = """
const x0 = xr.start, x1 = xr.end;
for (const [src, yr, lo, hi] of ys) {
  const t = src.data.time, a = src.data[lo], b = src.data[hi];
  let mn = Infinity, mx = -Infinity;
  for (let i = 0; i < t.length; i++) {
    if (t[i] < x0 || t[i] > x1) continue;
    if (a[i] < mn) mn = a[i];
    if (b[i] > mx) mx = b[i];
  }
  if (mn <= mx) {
    const pad = (mx - mn) * 0.05 || Math.abs(mx) * 0.01 || 1;
    yr.start = mn - pad; yr.end = mx + pad;
  }
}
"""


def _figure(title: str, x_range: Any, height: int, **kw: Any) -> Any:
    from bokeh.plotting import figure

    fig = figure(title=title, x_axis_type="datetime", height=height, sizing_mode="stretch_width",
                 tools=_TOOLS, active_drag="xpan", active_scroll="xwheel_zoom",
                 x_range=x_range, **kw)
    fig.toolbar.logo = None
    fig.xaxis.axis_label = "time (UTC)"
    fig.yaxis.formatter.use_scientific = False
    return fig


def _price_chart(symbol: str, bars: np.ndarray, timeframe: int, trades: list[dict],
                 x_range: Any, fits: list) -> Any:
    from bokeh.models import ColumnDataSource, HoverTool, Range1d

    from engine.sampler import format_timeframe

    cols, k = candles(bars)
    title = f"{symbol}  ({len(bars):,} bars of {format_timeframe(timeframe)}"
    title += f"; each candle merges {k:,} bars)" if k > 1 else ")"
    up = cols["close"] >= cols["open"]
    cols["color"] = np.where(up, _UP, _DOWN)
    cols["top"] = np.maximum(cols["open"], cols["close"])
    cols["bottom"] = np.minimum(cols["open"], cols["close"])
    src = ColumnDataSource(cols)
    lo, hi = (float(cols["low"].min()), float(cols["high"].max())) if len(bars) else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 1.0
    fig = _figure(title, x_range, 380, y_range=Range1d(lo - pad, hi + pad))
    fig.yaxis.axis_label = "price"
    width = 0.7 * k * timeframe * 1000.0
    fig.segment("time", "high", "time", "low", source=src, color="color")
    bodies = fig.vbar("time", width, "top", "bottom", source=src, fill_color="color",
                      line_color="color")
    fig.add_tools(HoverTool(renderers=[bodies], tooltips=[
        ("time", "@time{%F %T}"), ("open", "@open{0,0.[0000]}"), ("high", "@high{0,0.[0000]}"),
        ("low", "@low{0,0.[0000]}"), ("close", "@close{0,0.[0000]}")],
        formatters={"@time": "datetime"}))
    fits.append((src, fig.y_range, "low", "high"))
    mine = [t for t in trades if t.get("symbol") == symbol]
    if mine:
        _trade_marks(fig, mine)
    return fig


def _trade_marks(fig: Any, trades: list[dict]) -> None:
    from bokeh.models import ColumnDataSource, HoverTool

    pick = _spread(len(trades), MAX_TRADE_MARKS)
    chosen = [trades[i] for i in pick]
    long = np.array([t.get("side") == "long" for t in chosen])

    def times(key: str) -> np.ndarray:
        return np.array([np.nan if t.get(key) is None else float(t[key]) * 1000.0
                         for t in chosen])

    def values(key: str) -> np.ndarray:
        return np.array([np.nan if t.get(key) is None else float(t[key]) for t in chosen])

    pnl = values("pnl")
    data = {
        "entry_time": times("entry_time"), "entry_price": values("entry_price"),
        "exit_time": times("exit_time"), "exit_price": values("exit_price"),
        "size": values("size"), "pnl": pnl, "return_pct": values("return_pct"),
        "side": np.where(long, "long", "short"),
        "color": np.where(long, _LONG, _SHORT),
        "result": np.where(pnl >= 0, _WIN, _LOSS),
        "entry_marker": np.where(long, "triangle", "inverted_triangle"),
    }
    src = ColumnDataSource(data)
    fig.segment("entry_time", "entry_price", "exit_time", "exit_price", source=src,
                color="result", line_width=2, line_alpha=0.8)
    entries = fig.scatter("entry_time", "entry_price", source=src, marker="entry_marker",
                          size=11, fill_color="color", line_color="black", line_width=0.5,
                          legend_label="entry (▲ long, ▼ short)")
    exits = fig.scatter("exit_time", "exit_price", source=src, marker="square", size=8,
                        fill_color="white", line_color="color", line_width=2, legend_label="exit")
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    fig.add_tools(HoverTool(renderers=[entries, exits], tooltips=[
        ("side", "@side"), ("size", "@size{0,0.[0000]}"),
        ("entry", "@entry_time{%F %T} @ @entry_price{0,0.[0000]}"),
        ("exit", "@exit_time{%F %T} @ @exit_price{0,0.[0000]}"),
        ("P&L", "@pnl{0,0.00} (@return_pct{0.00} %)")],
        formatters={"@entry_time": "datetime", "@exit_time": "datetime"}))


def _curve_charts(equity: np.ndarray, x_range: Any, fits: list) -> list:
    from bokeh.models import ColumnDataSource, HoverTool, Range1d

    times = np.asarray(equity["time"], dtype=np.float64) * 1000.0
    t_eq, eq = envelope(times, np.asarray(equity["equity"], dtype=np.float64))
    t_dd, dd = envelope(times, np.asarray(equity["drawdown_pct"], dtype=np.float64))
    eq_src = ColumnDataSource({"time": t_eq, "equity": eq})
    dd_src = ColumnDataSource({"time": t_dd, "drawdown": dd, "zero": np.zeros(len(dd))})

    lo, hi = float(np.nanmin(eq)), float(np.nanmax(eq))
    pad = (hi - lo) * 0.05 or abs(hi) * 0.01 or 1.0
    fig_eq = _figure("equity", x_range, 260, y_range=Range1d(lo - pad, hi + pad))
    fig_eq.yaxis.axis_label = "equity"
    line = fig_eq.line("time", "equity", source=eq_src, line_width=1.5, color="#37474f")
    fig_eq.add_tools(HoverTool(renderers=[line], mode="vline", tooltips=[
        ("time", "@time{%F %T}"), ("equity", "@equity{0,0.00}")],
        formatters={"@time": "datetime"}))
    fits.append((eq_src, fig_eq.y_range, "equity", "equity"))

    worst = float(np.nanmin(dd)) if len(dd) else 0.0
    fig_dd = _figure(f"drawdown (worst {worst:.2f} %)", x_range, 200,
                     y_range=Range1d(min(worst * 1.1, -1.0), 0.5))
    fig_dd.yaxis.axis_label = "drawdown [%]"
    area = fig_dd.varea("time", "drawdown", "zero", source=dd_src, fill_color=_LOSS,
                        fill_alpha=0.35)
    fig_dd.line("time", "drawdown", source=dd_src, color=_LOSS, line_width=1)
    fig_dd.add_tools(HoverTool(renderers=[area], mode="vline", tooltips=[
        ("time", "@time{%F %T}"), ("drawdown", "@drawdown{0.00} %")],
        formatters={"@time": "datetime"}))
    return [fig_eq, fig_dd]


def _charts(result: Any) -> Any | None:
    from bokeh.layouts import column
    from bokeh.models import CustomJS, Range1d

    bars = {s: b for s, b in (getattr(result, "bars", None) or {}).items() if len(b)}
    equity = getattr(result, "equity", None)
    has_equity = equity is not None and len(equity) > 0
    if not bars and not has_equity:
        return None
    starts = [float(b["time"][0]) for b in bars.values()]
    ends = [float(b["time"][-1]) + result.timeframe for b in bars.values()]
    if has_equity:
        starts.append(float(equity["time"][0]))
        ends.append(float(equity["time"][-1]))
    x0, x1 = min(starts) * 1000.0, max(ends) * 1000.0
    x_range = Range1d(x0, x1 if x1 > x0 else x0 + 1000.0, bounds=(x0, max(x1, x0 + 1000.0)))
    fits: list = []
    trades = list(getattr(result, "trades", None) or [])
    figs = [_price_chart(s, b, result.timeframe, trades, x_range, fits)
            for s, b in bars.items()]
    if has_equity:
        figs += _curve_charts(equity, x_range, fits)
    fit = CustomJS(args={"xr": x_range, "ys": fits}, code=_FIT_Y)
    x_range.js_on_change("start", fit)
    x_range.js_on_change("end", fit)
    return column(*figs, sizing_mode="stretch_width", name="charts")


# -- the page -------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0 auto; padding: 16px 24px 48px; max-width: 1600px; }
h1 { font-size: 22px; margin: 4px 0; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #666; margin-bottom: 12px; }
.warn { color: #a40; font-weight: 600; margin-bottom: 12px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #fafafa; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 0 32px; }
.stats table { width: 100%; }
.win { color: #2e7d32; } .loss { color: #c62828; }
.trades { max-height: 70vh; overflow: auto; border: 1px solid #eee; }
.note { color: #888; font-size: 12px; }
"""

_TEMPLATE = """
{% extends base %}
{% block title %}{{ page_title }}{% endblock %}
{% block preamble %}<style>{{ css }}</style>{% endblock %}
{% block contents %}
{{ header }}
{{ embed(roots.charts) }}
{{ tables }}
{% endblock %}
"""


def _header(result: Any) -> str:
    from engine.sampler import format_timeframe

    params = ", ".join(f"{_esc(k)}={_esc(v)}" for k, v in (result.params or {}).items())
    stats = getattr(result, "stats", None) or {}
    span = (f" · {_esc(stats['start'])} to {_esc(stats['end'])}"
            if isinstance(stats.get("start"), str) and isinstance(stats.get("end"), str) else "")
    costs = stats.get("costs")
    cost_line = ("<div class='warn' id='costs'>No commission and no slippage: these results "
                 "pay nothing to trade.</div>" if costs == "none" else
                 f"<div class='sub' id='costs'>Costs: {_esc(costs)}</div>" if costs else "")
    return (f"<h1>{_esc(result.strategy)}</h1><div class='sub'>"
            f"{_esc(', '.join(result.symbols))} · {_esc(format_timeframe(result.timeframe))} bars"
            f"{span}{' · ' + params if params else ''}</div>{cost_line}")


def _stats_html(stats: dict) -> str:
    items = [(k, v) for k, v in stats.items() if k not in ("start_time", "end_time")]
    half = math.ceil(len(items) / 2) or 1
    tables = []
    for part in (items[:half], items[half:]):
        if part:
            rows = "".join(f"<tr><td class='l'>{_esc(_stat_name(k))}</td>"
                           f"<td>{_esc(_stat_value(k, v))}</td></tr>" for k, v in part)
            tables.append(f"<table>{rows}</table>")
    return "<h2>Statistics</h2><div class='stats' id='stats'>" + "".join(tables) + "</div>"


_TRADE_COLUMNS = [("symbol", "l"), ("side", "l"), ("size", ""), ("entry_time", "l"),
                  ("entry_price", ""), ("exit_time", "l"), ("exit_price", ""), ("pnl", ""),
                  ("return_pct", ""), ("fees", ""), ("bars", "")]


def _trades_html(trades: list[dict], period: int | None = None) -> str:
    n = len(trades)
    title = f"<h2>Trades ({n:,})</h2>"
    if not n:
        return title + "<p class='note'>No trades.</p>"
    shown = trades if n <= MAX_TRADE_ROWS else (trades[: MAX_TRADE_ROWS // 2]
                                                 + trades[-MAX_TRADE_ROWS // 2:])
    head = "<tr><th>#</th>" + "".join(
        f"<th class='{c}'>{_esc(_stat_name(k))}</th>" for k, c in _TRADE_COLUMNS) + "</tr>"
    rows = []
    for j, t in enumerate(shown):
        i = j + 1 if j < MAX_TRADE_ROWS // 2 or n <= MAX_TRADE_ROWS else n - len(shown) + j + 1
        pnl = t.get("pnl")
        cls = "win" if pnl is not None and pnl > 0 else "loss" if pnl is not None and pnl < 0 \
            else ""
        cells = []
        for key, c in _TRADE_COLUMNS:
            v = t.get(key)
            text = _when(v, period) if key.endswith("_time") else _stat_value(key, v)
            klass = " ".join(x for x in (c, cls if key in ("pnl", "return_pct") else "") if x)
            cells.append(f"<td class='{klass}'>{_esc(text)}</td>")
        rows.append(f"<tr><td>{i}</td>{''.join(cells)}</tr>")
        if n > MAX_TRADE_ROWS and j == MAX_TRADE_ROWS // 2 - 1:
            rows.append(f"<tr><td class='l note' colspan='{len(_TRADE_COLUMNS) + 1}'>… "
                        f"{n - len(shown):,} trades not shown …</td></tr>")
    return (title + "<div class='trades'><table id='trades'>" + head + "".join(rows)
            + "</table></div>")


def write_report(result: Any, path: str | Path) -> Path:
    """Write the HTML report of a backtest `result` to `path` and return the path.

    `result` has `strategy`, `params`, `symbols`, `timeframe` (seconds), `bars` (symbol ->
    ohlc_dtype rows), `trades` (dicts: symbol, side, size, entry/exit time in epoch s and price,
    pnl, return_pct in percent, fees, bars), `equity` (rows with time in epoch s, equity and
    drawdown_pct <= 0) and `stats` (name -> number or text; `*_pct` in percent).
    """
    path = Path(path)
    charts = _charts(result)
    trades = list(getattr(result, "trades", None) or [])
    variables = {
        "css": _CSS,
        "page_title": _esc(f"{result.strategy} · backtest"),
        "header": _header(result),
        "tables": _stats_html(dict(getattr(result, "stats", None) or {}))
        + _trades_html(trades, getattr(result, "timeframe", None)),
    }
    if charts is None:
        from bokeh.models import Div

        charts = Div(text="<p class='note'>No bars and no equity to chart.</p>", name="charts")
    return write_page(charts, f"{result.strategy} backtest", variables, path)


def write_page(charts: Any, title: str, variables: dict, path: Path) -> Path:
    """Render `charts` into the report's page template with `variables` and write it to
    `path` atomically (a reader never sees half a file)."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE
    from jinja2 import Template

    page = file_html(charts, INLINE, title=title, template=Template(_TEMPLATE.strip()),
                     template_variables=variables)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
