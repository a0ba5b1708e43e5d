"""The dashboard in a real browser: headless Debian chromium driven by playwright opens the page of a
running `engine run --ui` on the simulated market with `--paper`.

One engine process and one browser serve every test of the module (they take seconds to start).
Every wait is on a condition of the page or the process, with a deadline; nothing sleeps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import segments_of

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian "
                                "package `chromium`; .ci/run installs it)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "uitest"


def _engine(*args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, **kw)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # polling a file another process writes: no event to wait on


def dashboard_url(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """The URL `engine run --ui` prints on its log, once it does; fails if the run exits."""
    def url() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"engine run exited: {log.read_text()[-2000:]}")
        for line in log.read_text().splitlines():
            if line.startswith("dashboard: "):
                return line.removeprefix("dashboard: ").strip()
        return None

    return _wait_for(url, timeout, "the dashboard's URL")


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    """A paper run of sma_cross on the simulated market with its dashboard; its URL."""
    home = tmp_path_factory.mktemp("engine_home")
    env = dict(os.environ, ENGINE_HOME=str(home), PYTHONPATH=str(ROOT))
    log = home / "run.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "run", "strategies/sma_cross.py",
             "-p", "fast=2", "-p", "slow=4", "--paper", "--account", ACCOUNT,
             "--cash", "1000000", "--ui", "0", "--status-every", "3600", "--duration", "300",
             "-o", "seed=11"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        found = dashboard_url(proc, log, 60)
        yield {"url": found, "env": env, "proc": proc, "home": home, "log": log}
    finally:
        ui_pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                   and _parent(int(p.name)) == proc.pid]
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        # The run stops its dashboard and unlinks every segment, and removes its run file.
        for pid in ui_pids:
            _wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists() or
                      _zombie(pid), 10, f"dashboard process {pid} to exit")
        assert not segments_of(proc.pid, *ui_pids)
        assert not list((home / "runs").glob("*.json"))


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def page(engine_run):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.goto(engine_run["url"])
            yield pg
        finally:
            browser.close()


def test_the_dashboard_is_a_process_of_its_own(engine_run):
    children = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                and _parent(int(p.name)) == engine_run["proc"].pid]
    commands = [(c / "cmdline").read_bytes().split(b"\0") for c in children]
    assert any(b"engine.ui" in cmd and b"attach" in cmd for cmd in commands), commands


def test_candles_draw_and_then_move(page):
    page.wait_for_function("window.engineUi.candles > 100 && window.engineUi.last !== null",
                           timeout=20_000)
    before = page.evaluate("JSON.stringify(window.engineUi.last)")
    # The forming candle moves with the ticks (its close, or a new candle's time).
    page.wait_for_function(f"JSON.stringify(window.engineUi.last) !== {json.dumps(before)}",
                           timeout=10_000)
    # The strategy's two declared averages are overlaid, with values.
    page.wait_for_function("Object.keys(window.engineUi.lines).length === 2 && "
                           "Object.values(window.engineUi.lines).every(n => n > 0)",
                           timeout=20_000)
    assert page.evaluate("document.querySelector('#health').textContent").count("running")


def test_pan_left_loads_older_candles_and_timeframes_switch(page):
    page.wait_for_function("window.engineUi.first > 0", timeout=20_000)
    shown = page.evaluate("window.engineUi.candles")
    # Panning to the left edge fetches the candles before it, without reloading the page.
    page.evaluate("window.engineUi.chart.timeScale().setVisibleLogicalRange({from: 0, to: 80})")
    page.wait_for_function(f"window.engineUi.candles > {shown}", timeout=10_000)
    page.select_option("#tf", "5")
    page.wait_for_function("window.engineUi.view.tf === 5 && window.engineUi.candles > 0 && "
                           "window.engineUi.last && window.engineUi.last[0] % 5 === 0",
                           timeout=10_000)
    page.select_option("#tf", "1")
    page.wait_for_function("window.engineUi.view.tf === 1", timeout=10_000)


def test_fill_appears_as_marker_within_a_second(page):
    page.wait_for_function("window.engineUi.account !== null", timeout=30_000)
    # Record when each fill's marker first appears on the page (the page's own clock), from now
    # on: only fills made after this moment count.
    since = page.evaluate("""() => { const seen = window.markerSeen = {};
        const mark = () => { for (const m of window.engineUi.markers) for (const id of m.ids)
            if (!(id in seen)) seen[id] = Date.now(); requestAnimationFrame(mark); }; mark();
        return Date.now() / 1000; }""")
    page.wait_for_function(f"window.engineUi.account.fills.some(f => f.time > {since}) && "
                           f"window.engineUi.account.fills.every(f => "
                           f"window.engineUi.markers.some(m => m.ids.includes(String(f.fill_id))))",
                           timeout=60_000)
    fills, seen = page.evaluate("[window.engineUi.account.fills, window.markerSeen]")
    new = [f for f in fills if f["time"] > since]
    assert new
    for f in new:
        delay = seen[str(f["fill_id"])] / 1000 - f["time"]
        assert delay < 1.0, f"fill {f['fill_id']} marked {delay:.3f} s after it happened"
    marker = page.evaluate("window.engineUi.markers.at(-1)")
    assert marker["text"].startswith(("buy", "sell"))


def test_account_panel_matches_account_show(page, engine_run):
    page.wait_for_function("document.querySelector('#acct-fills') !== null", timeout=30_000)
    for _ in range(20):  # the run may fill between the two reads: read both again
        shown = _engine("account", "show", ACCOUNT, "--json", "--last", "100000",
                        env=engine_run["env"])
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        n = len(report["fills"])
        # The page catches up with the ledger (or has already moved past it).
        page.wait_for_function(f"+document.querySelector('#acct-fills').textContent >= {n}",
                               timeout=10_000)
        panel = page.evaluate("""() => ({
            fills: document.querySelector('#acct-fills').textContent,
            equity: document.querySelector('#acct-equity').textContent,
            cash: document.querySelector('#acct-cash').textContent,
            qty: Object.fromEntries([...document.querySelectorAll('#positions [data-qty]')].map(
                (e) => [e.dataset.qty, e.textContent]))})""")
        if panel["fills"] != str(n):
            continue
        assert panel["equity"] == f"{report['equity']:,.2f}"
        assert panel["cash"] == f"{report['cash']:,.2f}"
        assert panel["qty"] == {p["symbol"]: f"{p['quantity']:g}" for p in report["positions"]}
        return
    pytest.fail("the account never held still long enough to compare")


def test_requests_without_the_token_get_403(engine_run):
    parts = urlsplit(engine_run["url"])
    base = f"{parts.scheme}://{parts.netloc}"
    for path in ("/", "/static/app.js", "/api/info", "/api/account?name=uitest",
                 "/?token=wrong"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + path, timeout=10)
        err.value.close()
        assert err.value.code == 403, path
    with urllib.request.urlopen(engine_run["url"], timeout=10) as ok:
        assert ok.status == 200
    # The websocket too: an upgrade without the token is refused before any data flows.
    import socket

    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
                  b"\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 403")
    # Nor may a page of another site, even from a browser that holds the token's cookie.
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(f"GET /ws?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  "Origin: http://evil.example\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 403")
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(f"GET /ws?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  f"Origin: http://{parts.netloc}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 101")


def test_results_tab_draws_a_backtest_and_a_sweep_heatmap(page, tmp_path):
    """`engine.serve_ui`/`open_ui` over a backtest result of this process (its trades on its
    price bars) and a saved sweep (its heatmap)."""
    import threading

    import trio

    import engine
    from engine.ui import open_ui

    daily = ROOT / "providers" / "csvfile" / "samples" / "demo_daily.csv"
    result = engine.backtest(ROOT / "strategies" / "sma_cross.py", data=str(daily),
                             params={"fast": 5, "slow": 20, "log_bars": False})
    assert result.trades
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"strategy": "SmaCross", "metric": "sharpe", "best": {},
                                 "n_trials": 6, "deflated_sharpe": None, "failed": [],
                                 "rows": [{"params": {"fast": f, "slow": s}, "sharpe": f - s}
                                          for f in (3, 5, 8) for s in (20, 30)]}))
    ready, stop, out = threading.Event(), threading.Event(), {}

    async def serve() -> None:
        async with open_ui(results=[result, sweep]) as ui:
            out["url"] = ui.url
            ready.set()
            await trio.to_thread.run_sync(stop.wait, abandon_on_cancel=True)

    thread = threading.Thread(target=trio.run, args=(serve,))
    thread.start()
    tab = None
    try:
        assert ready.wait(30)
        tab = page.context.browser.new_page()
        tab.goto(out["url"])
        tab.wait_for_function("window.engineUi.resultMarkers > 0", timeout=15_000)
        assert tab.evaluate("window.engineUi.resultMarkers") == sum(
            (t["entry_time"] is not None) + (t["exit_time"] is not None)
            for t in result.to_dict()["trades"])
        assert tab.text_content("#res-stats").count("sharpe")
        tab.select_option("#result-select", "1")
        tab.wait_for_function("window.engineUi.heatmapCells === 6", timeout=10_000)
        first_row = tab.evaluate("[...document.querySelectorAll('#sweep-table tr')][1]"
                                 ".textContent")
        assert first_row.startswith("820")  # ranked by sharpe: fast 8, slow 20 first
    finally:
        if tab is not None:
            tab.close()
        stop.set()
        thread.join(30)


def test_screenshot_is_written(page, tmp_path):
    page.wait_for_function("window.engineUi.candles > 0 && window.engineUi.account !== null",
                           timeout=20_000)
    # Back to the newest candles (an earlier test panned to the oldest), the fills among them.
    page.evaluate("window.engineUi.chart.timeScale().scrollToPosition(0, false)")
    page.wait_for_function("window.engineUi.chart.timeScale().getVisibleLogicalRange().to >= "
                           "window.engineUi.candles - 2", timeout=10_000)
    out = Path(os.environ.get("ENGINE_UI_SCREENSHOT") or tmp_path / "dashboard.png")
    page.screenshot(path=str(out), full_page=True)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG")
    assert len(data) > 20_000
    print(f"dashboard screenshot: {out}")


def test_working_orders_are_drawn_as_price_lines(page):
    """An account holding a working limit and a stop (given to the page as the server sends
    one): each becomes a price line on the chart and a row of the orders table."""
    page.wait_for_function("window.engineUi.account !== null", timeout=30_000)
    account = page.evaluate("window.engineUi.account")
    last = page.evaluate("window.engineUi.last[4]")
    orders = [
        {"client_id": "t.1", "symbol": "btcusd", "side": "buy", "order_type": "limit",
         "size": 1.0, "remaining": 1.0, "limit_price": round(last * 0.99, 1),
         "stop_price": None, "tif": "GTC", "triggered": False},
        {"client_id": "t.2", "symbol": "btcusd", "side": "sell", "order_type": "stop",
         "size": 2.0, "remaining": 2.0, "limit_price": None,
         "stop_price": round(last * 0.98, 1), "tif": "GTC", "triggered": False},
    ]
    page.evaluate("(a) => window.engineUi.applyAccount(a)", dict(account, open_orders=orders))
    assert page.evaluate("window.engineUi.priceLines") == 2
    rows = page.evaluate("[...document.querySelectorAll('#orders tr')].slice(1)"
                         ".map(r => r.textContent)")
    assert len(rows) == 2
    assert rows[0].startswith("t.1btcusdbuylimit1")
    page.evaluate("(a) => window.engineUi.applyAccount(a)", account)
    assert page.evaluate("window.engineUi.priceLines") == sum(
        (o["limit_price"] is not None) + (o["stop_price"] is not None)
        for o in account["open_orders"] if o["symbol"] == "btcusd")
