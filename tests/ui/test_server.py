"""The dashboard's server without a browser: addresses, the token on every path, browsing saved
results, and the command line's one-line errors."""

from __future__ import annotations

import json
import re

import pytest
import trio

from engine.cli import main
from engine.ui import UiAddressError, check_address, open_ui, parse_address


def test_parse_address():
    assert parse_address("8050") == ("127.0.0.1", 8050)
    assert parse_address("0") == ("127.0.0.1", 0)
    assert parse_address("0.0.0.0:8050") == ("0.0.0.0", 8050)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    for bad in ("web", "127.0.0.1:http", "70000"):
        with pytest.raises(UiAddressError, match="PORT|port"):
            parse_address(bad)


def test_only_loopback_without_allow_remote():
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_address(host, allow_remote=False)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(UiAddressError, match="--allow-remote"):
            check_address(host, allow_remote=False)
        check_address(host, allow_remote=True)


def test_cli_refuses_a_remote_address_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["run", "strategies/sma_cross.py", "--ui", "0.0.0.0:0", "--duration", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--allow-remote" in err[0]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_cli_ui_names_a_missing_engine(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["ui", "--attach", "999999999"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no engine with pid 999999999" in err[0]


async def _get(port: int, path: str, headers: str = "") -> tuple[int, dict, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                              f"{headers}\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields.setdefault(k.strip().lower(), v.strip())
    return int(lines[0].split()[1]), fields, body


async def test_browse_saved_results_with_the_token_only(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path / "home"))
    backtest = {"strategy": "SmaCross", "params": {"fast": 3}, "symbols": ["btcusd"],
                "timeframe": "1m", "sharpe": 1.25, "total_return_pct": 3.5,
                "equity": [{"time": 60 * i, "equity": 1000 + i, "drawdown_pct": 0.0}
                           for i in range(5)],
                "trades": [], "fills": [], "orders": [], "log": [], "rejected": []}
    sweep = {"strategy": "SmaCross", "metric": "sharpe", "best": {"fast": 3, "slow": 10},
             "n_trials": 4, "deflated_sharpe": None, "failed": [],
             "rows": [{"params": {"fast": f, "slow": s}, "sharpe": f / s}
                      for f in (3, 5) for s in (10, 20)]}
    paths = [tmp_path / "bt.json", tmp_path / "sweep.json"]
    paths[0].write_text(json.dumps(backtest))
    paths[1].write_text(json.dumps(sweep))
    async with open_ui(results=paths, token="s3cret-token") as ui:
        assert ui.url == f"http://127.0.0.1:{ui.port}/?token=s3cret-token"
        status, _, _ = await _get(ui.port, "/api/info")
        assert status == 403
        status, _, _ = await _get(ui.port, "/api/info?token=wrong")
        assert status == 403
        status, headers, body = await _get(ui.port, "/?token=s3cret-token")
        assert status == 200
        # The page loads only what this server serves: nothing from a CDN.
        refs = re.findall(rb'(?:src|href)="([^"]+)"', body)
        assert b"/static/lightweight-charts.standalone.production.js" in refs
        assert all(r.startswith(b"/static/") for r in refs), refs
        cookie = headers["set-cookie"].split(";")[0]
        assert "HttpOnly" in headers["set-cookie"]
        # The page's own requests carry the cookie instead of the query.
        status, _, body = await _get(ui.port, "/api/info", f"Cookie: {cookie}\r\n")
        assert status == 200
        info = json.loads(body)
        assert info["live"] is None
        assert [r["name"] for r in info["results"]] == ["bt.json", "sweep.json"]
        status, _, body = await _get(ui.port, "/api/result?i=1", f"Cookie: {cookie}\r\n")
        got = json.loads(body)
        assert got["kind"] == "sweep"
        assert got["rows"] == sweep["rows"]
        status, _, body = await _get(ui.port, "/api/result?i=0", f"Cookie: {cookie}\r\n")
        got = json.loads(body)
        assert got["kind"] == "backtest"
        assert got["equity"] == backtest["equity"]
        status, _, body = await _get(ui.port, "/api/result?i=7", f"Cookie: {cookie}\r\n")
        assert status == 400
        assert b"no result 7" in body
        # Every asset ships in the package.
        for name in ("app.js", "app.css", "lightweight-charts.standalone.production.js",
                     "lightweight-charts.LICENSE"):
            status, _, body = await _get(ui.port, f"/static/{name}", f"Cookie: {cookie}\r\n")
            assert status == 200, name
            assert body
        status, _, _ = await _get(ui.port, "/static/../_server.py", f"Cookie: {cookie}\r\n")
        assert status == 404


async def test_missing_result_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        async with open_ui(results=[tmp_path / "nope.json"]):
            pass
