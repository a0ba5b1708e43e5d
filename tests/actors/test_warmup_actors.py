"""Warm-up with `--actors`: each strategy's need is found in its own actor (the root runs no
strategy code), the feed daemon pages the simulated market's history until it is covered, and
the strategy is warm from its first call."""

from __future__ import annotations

import json
import os
import textwrap

import trio

from engine.actors.root import run_actors
from tests.actors.procs import free_port

SMA30 = """
import json
import os

from engine import Strategy


class Sma30(Strategy):
    symbols = ("btcusd",)
    timeframe = "1m"

    def on_start(self):
        self.sma = self.ctx.indicator("sma", 30)
        with open({starts!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")

    def on_quote(self, quote):
        if not os.path.exists({seen!r}):
            with open({seen!r}, "w") as f:
                json.dump({{"bars": len(self.ctx.ohlcv("btcusd")), "sma": self.sma[-1]}}, f)
"""


async def test_actors_backfill_the_warmup_each_strategy_needs(tmp_path):
    starts, seen = tmp_path / "starts.txt", tmp_path / "seen.json"
    path = tmp_path / "sma30.py"
    path.write_text(textwrap.dedent(SMA30).format(starts=str(starts), seen=str(seen)))
    with trio.fail_after(90):
        # One frame of one-second history is 16 minutes: the daemon must page for 30.
        result = await run_actors([str(path)], registry=("127.0.0.1", free_port()), history=1,
                                  duration=2, provider_options={"seed": 5, "tick_rate": 50},
                                  log_level="warning", stop_timeout=10)
    assert result.ok, result.errors
    (need,) = result.warmup
    assert (need.strategy, need.bars, need.how) == ("Sma30", 30, "derived")
    load = result.history["btcusd"]
    assert load.need == 30
    assert load.bars >= 30
    assert load.calls == 2
    assert load.period == 1
    first = json.loads(seen.read_text())
    assert first["bars"] == load.bars  # warm from its first call
    assert first["sma"] == first["sma"]  # not NaN
    pids = starts.read_text().split()
    # The dry start (in the strategy's actor) and the real one, never in the root.
    assert len(pids) == 2
    assert str(os.getpid()) not in pids
    assert "history: btcusd" in result.summary()
