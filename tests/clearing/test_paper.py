"""Paper trading end to end: a strategy's orders fill against the live stream, the account
survives kill -9, and the CLI shows what the ledger holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from engine import LiveClock, Strategy, run_live
from engine.clearing.broker import open_account
from engine.clearing.config import BrokerConfig, RiskLimits
from engine.clearing.report import account_report
from tests.engine.scripted import make_provider

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def engine_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class Trader(Strategy):
    symbols = ("aaa",)

    def on_start(self):
        self.fills, self.rejections, self.orders = [], [], []
        self.sent = False

    def on_quote(self, quote):
        if not self.sent:
            self.sent = True
            self.ctx.buy("aaa", 5)                       # fills at once at the quote
            self.ctx.sell("aaa", 1, limit=104.0)        # rests until the price reaches it
            self.ctx.sell("aaa", 10_000)                # far beyond buying power: rejected

    def on_fill(self, fill):
        self.fills.append(fill)
        assert self.ctx.position("aaa") >= fill.size  # the account moved before we heard

    def on_order_rejected(self, rejection):
        self.rejections.append(rejection)

    def on_order(self, event):
        self.orders.append(event.type)


async def test_a_strategy_trades_a_paper_account_through_the_live_stream(autojump_clock):
    clock = LiveClock(T0)
    broker = open_account("t1", ["aaa"], cash=1_000.0, clock=clock,
                          config=BrokerConfig(risk=RiskLimits(leverage=1.0)))
    strat = Trader()
    try:
        result = await run_live([strat], provider=make_provider(every=0.5), symbols=["aaa"],
                                duration=5, clock=clock, router=broker, history=0)
    finally:
        broker.ledger.close()
    # The scripted provider trades at 100 + i every half second, no book: fills at the trade.
    assert [(f.side, f.size, f.price) for f in strat.fills] == [("buy", 5.0, 101.0),
                                                                ("sell", 1.0, 104.0)]
    assert strat.fills[1].liquidity == "maker"
    assert [r.reason.split(":")[0] for r in strat.rejections] == ["insufficient buying power"]
    assert strat.orders.count("order_accepted") == 2
    assert result.account["cash"] == 1_000.0 - 505.0 + 104.0
    report = account_report("t1")
    assert report["cash"] == result.account["cash"]
    assert [f["price"] for f in report["fills"]] == [101.0, 104.0]


_PAPER_STRATEGY = '''
import sys
from engine import Strategy


class Churn(Strategy):
    symbols = ("btcusd",)

    def on_quote(self, quote):
        side = self.ctx.buy if self.ctx.position("btcusd") <= 0 else self.ctx.sell
        side("btcusd", 0.01)

    def on_fill(self, fill):
        print(f"FILL {fill.fill_id} {fill.client_id} {fill.size}", flush=True)
'''


def test_kill_9_mid_stream_loses_no_fill_the_strategy_saw(tmp_path, engine_home):
    path = tmp_path / "churn.py"
    path.write_text(_PAPER_STRATEGY)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "engine.cli", "run", str(path), "--paper", "--account", "crash",
           "--cash", "1e9", "-o", "tick_rate=2000", "--history", "0", "--log-level", "error"]
    seen: list[tuple[int, str, float]] = []
    for round_ in range(2):
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, env=env) as proc:
            for line in proc.stdout:
                if line.startswith("FILL "):
                    _, fid, cid, size = line.split()
                    seen.append((int(fid), cid, float(size)))
                    if sum(1 for _ in seen) >= 40 * (round_ + 1):
                        break
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate(timeout=30)
        for line in rest.splitlines():  # told to the strategy before the kill landed
            if line.startswith("FILL "):
                _, fid, cid, size = line.split()
                seen.append((int(fid), cid, float(size)))
        report = account_report("crash")  # the ledger opens cleanly: no corrupt record
        stored = {(f["fill_id"], f["client_id"], f["size"]) for f in report["fills"]}
        missing = [s for s in seen if s not in stored]
        assert not missing, f"fills the strategy saw but the ledger lost: {missing[:5]}"
        ids = [f["fill_id"] for f in report["fills"]]
        assert ids == sorted(set(ids))
    # The restarted account continued from the rebuilt one: fill ids never repeat.
    assert len({s[0] for s in seen}) == len(seen)


def test_account_commands_show_the_ledger(tmp_path, engine_home):
    clock = LiveClock(T0)

    async def trade():
        broker = open_account("cli", ["aaa"], cash=10_000.0, clock=clock)
        try:
            await run_live([Trader()], provider=make_provider(every=0.5), symbols=["aaa"],
                           duration=3, clock=clock, router=broker, history=0)
        finally:
            broker.ledger.close()

    trio.run(trade, clock=trio.testing.MockClock(autojump_threshold=0))
    env = dict(os.environ, ENGINE_HOME=str(engine_home))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "engine.cli", "account", *args],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)

    shown = json.loads(cli("show", "cli", "--json").stdout)
    assert shown["cash"] == 10_000.0 - 505.0 + 104.0
    assert shown["positions"][0]["quantity"] == 4.0
    fills = json.loads(cli("fills", "cli", "--json").stdout)
    assert [f["size"] for f in fills] == [5.0, 1.0]
    text = cli("show", "cli").stdout
    assert "aaa" in text
    assert "last fills (2 of 2)" in text
    assert cli("list").stdout.split() == ["cli"]
    missing = cli("show", "nope")
    assert missing.returncode == 2
    assert "no paper account named 'nope' (accounts: cli)" in missing.stderr
    assert "Traceback" not in missing.stderr
