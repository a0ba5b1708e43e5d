"""Five strategies on one paper account: each settles its targets against its own book, under
`--actors` exactly as in one process, and the account holds the sum.

Each strategy calls `ctx.target` on every quote, flipping the sign of its target every few
quotes a fixed number of times, then holding. Two pairs share a class name (item 11: they trade
as `Name` and `Name#2`, with their own client ids). On a shared position (the old actor path)
these strategies fought: orders piled up and the account drifted far from any target.
"""

from __future__ import annotations

import math
import os
import signal
import textwrap

import pytest
import trio

from engine import BrokerConfig, LiveClock, RiskLimits, load_strategy, open_account, run_live
from engine.actors.root import run_actors
from engine.actors.supervise import Backoff
from engine.provider import load_provider
from tests.actors.procs import Events, descendants, free_port

TEMPLATE = """
from engine import Strategy


class {cls}(Strategy):
    symbols = ("btcusd",)
    size: float = {size}
    flips: int = {flips}
    every: int = 4

    def on_start(self):
        self.n = 0

    def on_quote(self, quote):
        self.n += 1
        k = min(self.n // self.every, self.flips)
        self.ctx.target("btcusd", -self.size if k % 2 else self.size)
"""

# (class, size, flips): the final target is size * (-1) ** flips.
STRATEGIES = [("Flip", 0.1, 3), ("Flip", 0.2, 4), ("Swing", 0.3, 5), ("Swing", 0.05, 2),
              ("Drift", 0.25, 6)]
NAMES = ["Flip", "Flip#2", "Swing", "Swing#2", "Drift"]
FINAL = {name: size * (-1) ** flips for name, (_, size, flips) in zip(NAMES, STRATEGIES,
                                                                      strict=True)}
OPTIONS = {"seed": 11, "tick_rate": 300}
CONFIG = BrokerConfig(risk=RiskLimits(leverage=20.0))
CASH = 10_000_000.0
T0 = 1_700_000_000.0


@pytest.fixture
def files(tmp_path):
    paths = []
    for i, (cls, size, flips) in enumerate(STRATEGIES):
        path = tmp_path / f"s{i}.py"
        path.write_text(textwrap.dedent(TEMPLATE).format(cls=cls, size=size, flips=flips))
        paths.append(str(path))
    return paths


def _settled(result):
    """Each strategy's own position, the orders it sent, and the account's position."""
    own = {s.name: s.positions.get("btcusd", 0.0) for s in result.strategies}
    orders = {s.name: s.orders for s in result.strategies}
    account = {p["symbol"]: p["quantity"] for p in result.account["positions"]}
    return own, orders, account.get("btcusd", 0.0)


def _check(result):
    assert result.ok, result.errors
    own, orders, account = _settled(result)
    assert list(own) == NAMES
    for name, want in FINAL.items():
        assert math.isclose(own[name], want, abs_tol=1e-9), (name, own)
    # One order to the first target, then one reversal per flip: never a stale re-order.
    assert orders == {name: flips + 1 for name, (_, _, flips) in zip(NAMES, STRATEGIES,
                                                                     strict=True)}
    assert math.isclose(account, sum(FINAL.values()), abs_tol=1e-9)
    ids = [o.client_id for o in result.orders]
    assert len(set(ids)) == len(ids)
    return own, account


def _one_process(paths, tmp_path):
    strategies = [load_strategy(p)() for p in paths]

    async def main():
        clock = LiveClock(T0)
        broker = open_account("one", ["btcusd"], cash=CASH, config=CONFIG, clock=clock,
                              path=tmp_path / "one")
        provider = load_provider("providers.sim")
        provider.configure(**OPTIONS)
        try:
            # 30 s of simulated market: hundreds of quotes, far past every strategy's last flip.
            return await run_live(strategies, provider=provider, symbols=["btcusd"],
                                  duration=30, clock=clock, router=broker, history=0)
        finally:
            broker.ledger.close()

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_five_strategies_on_one_account_settle_the_same_with_and_without_actors(files,
                                                                                 tmp_path):
    single = _check(_one_process(files, tmp_path))

    stop = trio.Event()
    settled: set[str] = set()
    want = {name: (FINAL[name], flips + 1)
            for name, (_, _, flips) in zip(NAMES, STRATEGIES, strict=True)}

    def on_event(event):
        # Stop once each strategy has sent its last order and that order has filled: its own
        # book holds the final target (until then it holds the opposite one).
        if event["event"] == "strategy_stats":
            target, orders = want[event["strategy"]]
            held = event["positions"].get("btcusd", 0.0)
            if event["orders"] == orders and math.isclose(held, target, abs_tol=1e-9):
                settled.add(event["strategy"])
                if settled == set(NAMES):
                    stop.set()

    async def main():
        with trio.fail_after(180):
            return await run_actors(
                files, registry=("127.0.0.1", free_port()), history=0, provider_options=OPTIONS,
                paper={"name": "actors", "cash": CASH, "config": CONFIG,
                       "path": tmp_path / "actors"},
                status_every=0.2, on_event=on_event, stop=stop, log_level="warning",
                stop_timeout=10.0)

    actors = _check(trio.run(main))
    # Each strategy's own position: a sum of its fills, which a partial fill may split at
    # other quotes under actors, so equal to the last rounding.
    assert list(actors[0]) == list(single[0])
    for name, pos in actors[0].items():
        assert math.isclose(pos, single[0][name], rel_tol=1e-12, abs_tol=1e-12), name
    # The account's total is a sum of fills: the order they landed in may round differently.
    assert math.isclose(actors[1], single[1], rel_tol=1e-12, abs_tol=1e-12)
    assert not descendants(os.getpid()), "an actor process outlived the run"


HOLD = """
from engine import Strategy


class Hold(Strategy):
    symbols = ("btcusd",)

    def on_quote(self, quote):
        self.ctx.target("btcusd", 0.5)
"""


def test_a_strategy_actor_killed_and_restarted_resumes_its_own_book(tmp_path):
    path = tmp_path / "hold.py"
    path.write_text(HOLD)
    events = Events()
    stop = trio.Event()

    async def main():
        with trio.fail_after(180):
            async with trio.open_nursery() as nursery:
                result = []

                async def run():
                    result.append(await run_actors(
                        [str(path)], registry=("127.0.0.1", free_port()), history=0,
                        provider_options=OPTIONS, restart=True, backoff=Backoff(first=0.2),
                        paper={"name": "hold", "cash": CASH, "config": CONFIG,
                               "path": tmp_path / "hold"},
                        status_every=0.2, on_event=events, stop=stop, log_level="warning",
                        stop_timeout=10.0))

                nursery.start_soon(run)
                first = await events.wait(event="strategy_started", strategy="Hold")
                await events.more_quotes("Hold", 20)
                os.kill(first["pid"], signal.SIGKILL)
                await events.wait(event="strategy_started", strategy="Hold", life=2)
                await events.more_quotes("Hold", 20)
                stop.set()
            return result[0]

    result = trio.run(main)
    assert result.restarts == {"Hold": 1}
    # The second life rebuilt its book from the account (+0.5 held): it ordered nothing more.
    assert result.strategies[0].positions == {"btcusd": 0.5}
    assert result.strategies[0].orders == 0
    assert [(p["symbol"], p["quantity"]) for p in result.account["positions"]] == [
        ("btcusd", 0.5)]
