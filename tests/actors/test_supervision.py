"""Strategy actors on one feed daemon: crash isolation, kill -9, restarts, shm read in place.

One actor tree serves the whole module (actors take seconds to start on a small machine): three
strategies, one raising once, one killed with SIGKILL, one steady that must keep receiving
quotes through both, with `restart` on.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap

import numpy as np
import trio

from engine.actors.root import run_actors
from engine.actors.supervise import Backoff
from engine.shm import ShmArray
from tests.actors.procs import Events, descendants, free_port, mapped_segments

STEADY = """
from engine import Strategy


class Steady(Strategy):
    symbols = ("btcusd",)

    def on_quote(self, quote):
        pass

    def on_bar(self, symbol):
        bars = self.ctx.ohlcv(symbol)
        # Where the rows live: a view of the attached segment, never a private copy.
        base = bars
        while isinstance(base.base, np.ndarray):
            base = base.base
        with open({out!r}, "w") as f:
            json.dump({{"time": int(bars["time"][-1]), "close": float(bars["close"][-1]),
                       "rows": len(bars), "owndata": bool(bars.flags.owndata),
                       "writeable": bool(bars.flags.writeable),
                       "mmap": type(base.base).__name__}}, f)
"""

BOOM = """
from pathlib import Path

from engine import Strategy


class Boom(Strategy):
    symbols = ("btcusd",)

    def on_start(self):
        self.n = 0

    def on_quote(self, quote):
        self.n += 1
        marker = Path({marker!r})
        if self.n == 20 and not marker.exists():
            marker.touch()
            raise RuntimeError("boom at quote 20")
"""

VICTIM = """
from engine import Strategy


class Victim(Strategy):
    symbols = ("btcusd",)

    def on_quote(self, quote):
        pass
"""


def write(tmp_path, name: str, text: str, **fmt) -> str:
    path = tmp_path / name
    header = "import json\nimport numpy as np\n" if name == "steady.py" else ""
    path.write_text(header + textwrap.dedent(text).format(**fmt))
    return str(path)


async def test_a_failing_or_killed_strategy_actor_is_reported_restarted_and_isolated(tmp_path):
    out = tmp_path / "steady.json"
    steady = write(tmp_path, "steady.py", STEADY, out=str(out))
    boom = write(tmp_path, "boom.py", BOOM, marker=str(tmp_path / "boomed"))
    victim = write(tmp_path, "victim.py", VICTIM)
    raise_line = (tmp_path / "boom.py").read_text().splitlines().index(
        '            raise RuntimeError("boom at quote 20")') + 1
    events, stop = Events(), trio.Event()
    result = None

    async def run() -> None:
        nonlocal result
        result = await run_actors(
            [steady, boom, victim], registry=("127.0.0.1", free_port()), history=1,
            provider_options={"seed": 3, "tick_rate": 200}, restart=True,
            backoff=Backoff(first=0.2), status_every=0.2, on_event=events, stop=stop,
            log_level="warning")

    with trio.fail_after(80):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            feed = await events.wait(event="feed")
            started = {}
            for name in ("Steady", "Boom", "Victim"):
                started[name] = await events.wait(event="strategy_started", strategy=name)

            # 1. Boom raises in on_quote: reported with its own traceback lines, restarted.
            failed = await events.wait(event="strategy_failed", strategy="Boom")
            line = raise_line
            assert f'File "{boom}", line {line}, in on_quote' in failed["error"]
            assert "RuntimeError: boom at quote 20" in failed["error"]
            assert failed["restart_in"] == 0.2
            await events.more_quotes("Steady", 30)  # the others run on
            again = await events.wait(event="strategy_started", strategy="Boom", life=2)
            assert again["pid"] != started["Boom"]["pid"]

            # 2. kill -9 of a strategy actor: reported, the others run on, restarted.
            os.kill(started["Victim"]["pid"], signal.SIGKILL)
            killed = await events.wait(event="strategy_failed", strategy="Victim")
            assert "killed by SIGKILL" in killed["error"]
            await events.more_quotes("Steady", 30)
            await events.wait(event="strategy_started", strategy="Victim", life=2)

            # 3. Bars are read in place: the steady actor maps the daemon's segment, sees
            # exactly the rows the daemon wrote, through a read-only view of the mapping.
            segment = started["Steady"]["segments"][0]
            assert segment in mapped_segments(started["Steady"]["pid"])
            assert segment == feed["tokens"]["bars"]["btcusd"]["name"]
            while not out.exists():
                await events.wait(new=True, event="strategy_stats", strategy="Steady")
            seen = json.loads(out.read_text())
            assert seen["owndata"] is False
            assert seen["writeable"] is False
            assert seen["mmap"] == "mmap"
            with ShmArray.attach(feed["tokens"]["bars"]["btcusd"]) as bars:
                row = bars.array[bars.array["time"] == seen["time"]]
                assert np.allclose(row["close"], seen["close"])
            stop.set()

    report = {s.name: s for s in result.strategies}
    assert report["Steady"].error is None
    assert report["Steady"].quotes > 60
    assert report["Steady"].bars > 0
    assert result.restarts == {"Steady": 0, "Boom": 1, "Victim": 1}
    assert "RuntimeError: boom at quote 20" in result.failures["Boom"][0]
    assert result.ok, result.errors
    assert not descendants(os.getpid()), "an actor process outlived the run"


async def test_quotes_and_paper_fills_over_the_tractor_stream_without_lanes(tmp_path):
    trader = write(tmp_path, "trader.py", """
        from engine import Strategy


        class Trader(Strategy):
            symbols = ("btcusd",)

            def on_start(self):
                self.sent = False

            def on_quote(self, quote):
                if not self.sent:
                    self.sent = True
                    self.ctx.buy("btcusd", 0.01)
        """)
    events, stop = Events(), trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            result = []

            async def run() -> None:
                result.append(await run_actors(
                    [trader], registry=("127.0.0.1", free_port()), history=0, lanes=False,
                    pin_cpus=False,
                    provider_options={"seed": 5, "tick_rate": 200}, status_every=0.2,
                    paper={"name": "lanes", "cash": 10_000.0, "path": tmp_path / "account"},
                    on_event=events, stop=stop, log_level="warning",
                    # About the stream and fills, not shutdown speed (the CLI Ctrl-C test bounds
                    # that): give a loaded machine time to run on_stop.
                    stop_timeout=10.0))

            nursery.start_soon(run)
            feed = await events.wait(event="feed")
            started = await events.wait(event="strategy_started", strategy="Trader")
            # Not pinned: the actors may use every CPU this process may.
            assert os.sched_getaffinity(feed["pid"]) == os.sched_getaffinity(0)
            assert os.sched_getaffinity(started["pid"]) == os.sched_getaffinity(0)
            await events.more_quotes("Trader", 50)
            stop.set()
    result = result[0]
    assert result.ok, result.errors
    assert "CPUs: placed by the OS" in result.summary()
    assert result.strategies[0].quotes >= 50
    assert result.account["fills"] == 1
    assert [p["symbol"] for p in result.account["positions"]] == ["btcusd"]
