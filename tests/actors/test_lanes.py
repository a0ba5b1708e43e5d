"""Quotes and bars across actors on the default lanes (shared-memory ring and doorbell): a
strategy actor gets every quote the feed sent after it subscribed, once and in order, and an
on_bar for every closed bar, none skipped; the segments of the run are gone after it."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import trio

from engine.actors.cpus import CpuPlan, describe, plan_cpus
from engine.actors.root import run_actors
from tests.actors.procs import Events, descendants, free_port

RECORDER = """
import json

from engine import Strategy


class Recorder(Strategy):
    symbols = ("btcusd", "ethusd")
    out: str = ""

    def on_start(self):
        self.seqs = []
        self.bars = {{}}

    def on_quote(self, quote):
        self.seqs.append([quote["seq"], quote["symbol"]])

    def on_bar(self, symbol):
        self.bars.setdefault(symbol, []).append(int(self.ctx.ohlcv(symbol)["time"][-1]))

    def on_stop(self):
        with open(self.out, "w") as f:
            json.dump({{"seqs": self.seqs, "bars": self.bars}}, f)
"""


def _segments_of(pid: int) -> list[str]:
    return [p.name for p in Path("/dev/shm").glob(f"engine_{pid}_*")]


async def test_a_strategy_actor_gets_every_quote_once_in_order_and_every_bar(tmp_path):
    path = tmp_path / "recorder.py"
    path.write_text(textwrap.dedent(RECORDER).format())
    out = tmp_path / "seen.json"
    provider = str(Path(__file__).with_name("numbered.py"))
    events, stop = Events(), trio.Event()
    result = []
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                result.append(await run_actors(
                    [str(path)], provider=provider, symbols=["btcusd", "ethusd"],
                    registry=("127.0.0.1", free_port()),
                    provider_options={"seed": 2, "tick_rate": 2000}, history=0,
                    params={"out": str(out)}, mailbox=1 << 16, status_every=0.2,
                    on_event=events, stop=stop, log_level="warning", stop_timeout=10.0))

            nursery.start_soon(run)
            feed = await events.wait(event="feed")
            started = await events.wait(event="strategy_started", strategy="Recorder")
            placed = {"feed": os.sched_getaffinity(feed["pid"]),
                      "strategy": os.sched_getaffinity(started["pid"])}
            await events.more_quotes("Recorder", 3000)  # some seconds: bars close too
            stop.set()
    result = result[0]
    assert result.ok, result.errors
    # The daemon on a CPU of its own, the strategy actor on the others (with two CPUs or more).
    plan = plan_cpus()
    if plan.feed is not None:
        assert placed == {"feed": set(plan.feed), "strategy": set(plan.strategies)}
        assert "CPUs: feed daemon on" in result.summary()
    report = result.strategies[0]
    assert report.coalesced == 0
    seen = json.loads(out.read_text())
    seqs = [s for s, _ in seen["seqs"]]
    # Numbered by the provider as sent; the strategy joined the stream somewhere: from there
    # on, every number once and in order (across both symbols).
    assert len(seqs) >= 3000
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a quote was lost or reordered"
    assert {sym for _, sym in seen["seqs"]} == {"btcusd", "ethusd"}
    assert report.quotes == len(seqs)
    # Every closed one-second bar of each symbol, none skipped and none twice.
    for sym in ("btcusd", "ethusd"):
        times = seen["bars"][sym]
        assert len(times) >= 1
        assert times == list(range(times[0], times[0] + len(times))), f"{sym}: a bar was lost"
    assert not descendants(os.getpid()), "an actor process outlived the run"
    # The daemon's segments, its subscribers' rings among them, are gone with it.
    assert not _segments_of(feed["pid"])


def test_the_feed_daemon_gets_the_last_cpu_and_strategies_the_rest():
    assert plan_cpus({0, 1}) == CpuPlan(feed=(1,), strategies=(0,))
    assert plan_cpus({5, 2, 9}) == CpuPlan(feed=(9,), strategies=(2, 5))  # `taskset` decides
    assert plan_cpus({3}) == CpuPlan()  # one CPU: the OS places everything
    assert plan_cpus(set()) == CpuPlan()
    assert describe(CpuPlan()) == "CPUs: placed by the OS"
    two = plan_cpus({0, 1})
    assert describe(two) == "CPUs: feed daemon on 1, strategy actors on 0"
    assert describe(two, shared_feed=True).startswith("CPUs: strategy actors on 0 (the shared")
