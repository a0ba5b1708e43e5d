"""The simulated market: determinism, pacing, the quote and bar contracts, and history that meets
the live stream. Every async test runs on trio's autojump MockClock; seeds are fixed and named in
failure messages."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import trio

import providers.sim as sim
from engine.dtypes import OHLC_FIELDS, ohlc_dtype
from engine.shm import ShmArray
from providers.sim import _config
from providers.sim._symbols import UNIVERSE

ANCHOR = 1_732_406_400  # 2024-11-24 00:00:00 UTC


@pytest.fixture(autouse=True)
def fresh_market(monkeypatch):
    for var in _config.ENV.values():
        monkeypatch.delenv(var, raising=False)
    sim.configure(start_time=ANCHOR)
    yield
    sim.reset()


async def collect(symbols, seconds, *, buffer=1000):
    """Stream `symbols` and return (first_quotes, init_msgs, messages before anchor + seconds,
    clock seconds it took)."""
    send, recv = trio.open_memory_channel(buffer)
    live = trio.Event()
    msgs = []
    async with trio.open_nursery() as nursery:
        init, first = await nursery.start(sim.stream_quotes, send, symbols, None, live)
        start = trio.current_time()
        async for msg in recv:
            if msg["time"] >= ANCHOR + seconds:
                break
            msgs.append(msg)
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return first, init, msgs, took


async def backfill(sym, size=10_000, count=10, start=None, seed_rows=None):
    with ShmArray.create(ohlc_dtype, size, start=start) as shm:
        if seed_rows is not None:
            shm.push(seed_rows)
        async with trio.open_nursery() as nursery:
            scope = await nursery.start(sim.backfill_bars, sym, shm, count)
            assert isinstance(scope, trio.CancelScope)
        return shm.array.copy(), shm.first, shm.last


def ticks_of(msgs, kind=None):
    return [t for m in msgs for t in m["ticks"] if kind is None or t["type"] == kind]


# -- surface and options -------------------------------------------------------------------------


def test_module_surface():
    assert sim.ohlc_dtype == ohlc_dtype
    assert inspect.iscoroutinefunction(sim.stream_quotes)
    assert inspect.iscoroutinefunction(sim.backfill_bars)
    assert list(inspect.signature(sim.stream_quotes).parameters) == [
        "send_chan", "symbols", "shm", "feed_is_live", "loglevel", "task_status",
    ]  # fmt: skip
    assert list(inspect.signature(sim.backfill_bars).parameters) == [
        "sym", "shm", "count", "task_status",
    ]  # fmt: skip
    assert inspect.signature(sim.backfill_bars).parameters["count"].default == 10


def test_configure_parses_strings_and_env(monkeypatch):
    opts = sim.configure(seed="3", tick_rate="100k", start_time="2024-11-24T00:00:00.9Z")
    assert (opts["seed"], opts["tick_rate"], opts["start_time"]) == (3, 100_000.0, ANCHOR)
    assert sim.configure(start_time=ANCHOR + 0.99)["start_time"] == ANCHOR
    assert sim.configure(max_msg_rate="0")["max_msg_rate"] is None
    monkeypatch.setenv("ENGINE_SIM_SEED", "11")
    monkeypatch.setenv("ENGINE_SIM_TICK_RATE", "2500")
    opts = sim.configure()
    assert (opts["seed"], opts["tick_rate"]) == (11, 2500.0)
    assert sim.configure(seed=5)["seed"] == 5  # options beat the environment
    monkeypatch.setenv("ENGINE_SIM_SEED", "x")
    with pytest.raises(ValueError, match="ENGINE_SIM_SEED"):
        sim.configure()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"tick_rate": 0}, "tick_rate"),
        ({"tick_rate": "fast"}, "tick_rate"),
        ({"tick_rate": True}, "tick_rate"),
        ({"volatility": -0.1}, "volatility"),
        ({"jump_intensity": "nan"}, "jump_intensity"),
        ({"start_time": "yesterday"}, "start_time"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_configure_rejects_bad_values(options, named):
    with pytest.raises(ValueError, match=named):
        sim.configure(**options)


def test_anchor_is_the_wall_clock_at_first_use_floored(monkeypatch):
    sim.reset()
    monkeypatch.setattr(_config.time, "time", lambda: ANCHOR + 0.7)
    assert _config.current().anchor == ANCHOR
    monkeypatch.setattr(_config.time, "time", lambda: ANCHOR + 99.0)
    assert _config.current().anchor == ANCHOR  # fixed until the next configure()


def test_symbol_info_and_search():
    info = sim.symbol_info("BtcUsd")
    assert (info["symbol"], info["name"]) == ("BtcUsd", "btcusd")
    assert (info["tick_size"], info["lot_size"]) == (0.1, 0.0001)
    assert info["writes_shm"] is False
    assert len(UNIVERSE) >= 10
    assert "eurusd" in sim.search_symbols("EUR")
    assert sim.search_symbols("apple") == ["aapl"]
    assert "nvda" in sim.search_symbols("nvdia")
    with pytest.raises(KeyError, match="did you mean btcusd"):
        sim.symbol_info("btcusdt")


# -- stream_quotes -------------------------------------------------------------------------------


async def test_unknown_symbol_raises_before_started(autojump_clock):
    send, recv = trio.open_memory_channel(10)
    live = trio.Event()
    with pytest.raises(ValueError, match="'XBTUSDT'") as err:  # noqa: PT012
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.stream_quotes, send, ["btcusd", "XBTUSDT"], None, live)
    assert isinstance(err.value, KeyError)
    assert not live.is_set()
    with pytest.raises(trio.WouldBlock):
        recv.receive_nowait()
    with ShmArray.create(ohlc_dtype, 100) as shm:
        with pytest.raises(KeyError, match="'nope'"):  # noqa: PT012
            async with trio.open_nursery() as nursery:
                await nursery.start(sim.backfill_bars, "nope", shm)
        assert len(shm.array) == 0


async def test_first_quotes_for_every_symbol(autojump_clock):
    symbols = [*UNIVERSE, "SPY"]
    send, recv = trio.open_memory_channel(0)
    live = trio.Event()
    async with trio.open_nursery() as nursery:
        init, first = await nursery.start(sim.stream_quotes, send, symbols, None, live)
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()  # nothing is sent before started
        assert set(init) == set(first) == set(symbols)
        for sym, quote in first.items():
            assert quote["symbol"] == sym
            assert 0 < quote["bid"] < quote["ask"]
            assert quote["last"] > 0
            assert quote["time"] == ANCHOR
            assert init[sym]["symbol"] == sym
        msg = await recv.receive()
        assert live.is_set()
        assert msg["symbol"] in symbols
        nursery.cancel_scope.cancel()


async def test_same_seed_same_ticks(autojump_clock):
    runs = []
    for seed in (1, 1, 2):
        sim.configure(seed=seed, start_time=ANCHOR)
        first, _, msgs, _ = await collect(["btcusd", "aapl"], 2)
        runs.append((first, msgs))
    assert runs[0] == runs[1], "seed 1 twice gave different streams"
    assert runs[0][1][:50] != runs[2][1][:50], "seeds 1 and 2 gave the same stream"
    assert runs[0][0] != runs[2][0]


async def test_rate_is_honored_in_clock_time(autojump_clock):
    rate, seconds = 5000, 4
    sim.configure(tick_rate=rate, start_time=ANCHOR)
    _, _, msgs, took = await collect(["ethusd", "eurusd"], seconds)
    assert took == pytest.approx(seconds, abs=0.05)
    for sym in ("ethusd", "eurusd"):
        n = len(ticks_of([m for m in msgs if m["symbol"] == sym]))
        assert n == pytest.approx(rate * seconds, rel=0.03), sym
    times = [m["time"] for m in msgs]
    assert times == sorted(times)
    assert ANCHOR <= times[0] <= times[-1] < ANCHOR + seconds


async def test_high_rate_and_message_cap(autojump_clock):
    sim.configure(tick_rate="200k", max_msg_rate=2000, start_time=ANCHOR)
    _, _, msgs, _ = await collect(["solusd"], 0.5)
    assert len(ticks_of(msgs)) == pytest.approx(100_000, rel=0.03)
    assert len(msgs) <= 0.5 * 2000 + 20
    assert [t["time"] for t in ticks_of(msgs)] == sorted(t["time"] for t in ticks_of(msgs))


async def test_quotes_are_well_formed(autojump_clock):
    sim.configure(seed=4, tick_rate=2000, start_time=ANCHOR)
    first, _, msgs, _ = await collect(["eurusd", "msft", "btcusd"], 2)
    for sym in ("eurusd", "msft", "btcusd"):
        info = sim.symbol_info(sym)
        tick, lot = info["tick_size"], info["lot_size"]
        last = first[sym]["last"]
        mine = [m for m in msgs if m["symbol"] == sym]
        assert mine, sym
        for m in mine:
            assert set(m) == {"symbol", "last", "time", "bid", "ask", "ticks"}
            assert m["ask"] - m["bid"] >= tick * 0.999, (sym, m)
            book = {t["type"]: t for t in m["ticks"] if t["type"] != "trade"}
            assert (book["bid"]["price"], book["ask"]["price"]) == (m["bid"], m["ask"])
            for t in m["ticks"]:
                assert t["type"] in ("trade", "bid", "ask")
                assert t["time"] == m["time"]
                assert t["price"] / tick == pytest.approx(round(t["price"] / tick), abs=1e-6)
                assert t["size"] > 0
                assert t["size"] / lot == pytest.approx(round(t["size"] / lot), abs=1e-6)
                if t["type"] == "trade":
                    assert t["price"] in (m["bid"], m["ask"])
                    last = t["price"]
            assert m["last"] == last


async def test_cancel_ends_a_blocked_stream(autojump_clock):
    send, recv = trio.open_memory_channel(0)
    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.stream_quotes, send, ["btcusd"], None, trio.Event())
            await recv.receive()
            await trio.sleep(1)  # nobody receives: the stream is blocked in send
            nursery.cancel_scope.cancel()
    assert trio.current_time() < 5


# -- backfill_bars -------------------------------------------------------------------------------


async def test_backfill_bars_are_ordered_and_consistent(autojump_clock):
    rows, first, last = await backfill("aapl", size=8000, count=3)
    assert len(rows) == last - first == 3000
    assert np.array_equal(rows["index"], np.arange(first, last))
    assert np.all(np.diff(rows["time"]) == 1)
    assert rows["time"][-1] == ANCHOR - 1
    assert np.all(rows["high"] >= np.maximum(rows["open"], rows["close"]))
    assert np.all(rows["low"] <= np.minimum(rows["open"], rows["close"]))
    assert np.all((rows["low"] <= rows["bar_wap"]) & (rows["bar_wap"] <= rows["high"]))
    assert np.all(rows["volume"] >= 0)
    assert np.all(rows["count"] >= 0)
    assert rows["count"].mean() > 10
    # One frame alone is the newest 1000 of the three: frames do not depend on count.
    newest, _, _ = await backfill("aapl", size=8000, count=1)
    assert np.array_equal(newest[list(OHLC_FIELDS[1:])], rows[-1000:][list(OHLC_FIELDS[1:])])


async def test_history_meets_the_live_stream(autojump_clock):
    for seed in (7, 8):
        sim.configure(seed=seed, start_time=ANCHOR)
        rows, _, _ = await backfill("btcusd", size=2000, count=1)
        first, _, msgs, _ = await collect(["btcusd"], 1)
        assert first["btcusd"]["last"] == rows["close"][-1], f"seed {seed}"
        assert rows["time"][-1] < ANCHOR <= msgs[0]["time"]
        trade = ticks_of(msgs, "trade")[0]["price"]
        assert abs(math.log(trade / rows["close"][-1])) < 0.002, f"seed {seed}"


async def test_backfill_never_overruns_the_buffer(autojump_clock):
    rows, first, last = await backfill("ethusd", size=1500, count=10)
    assert (first, last) == (0, 1500)
    assert np.all(np.diff(rows["time"]) == 1)
    assert rows["time"][-1] == ANCHOR - 1
    rows, first, last = await backfill("ethusd", size=700, count=10, start=0)
    assert (first, last) == (0, 700)
    assert rows["time"][-1] == ANCHOR - 1
    # A buffer already holding a live bar only gets older history before it.
    live_bar = np.zeros(1, dtype=ohlc_dtype)
    live_bar["time"] = ANCHOR
    rows, first, last = await backfill("ethusd", size=2001, count=5, start=2000, seed_rows=live_bar)
    assert (first, last) == (0, 2001)
    assert np.all(np.diff(rows["time"]) == 1)
    assert rows["time"][-1] == ANCHOR


async def test_log_returns_match_the_configured_vol(autojump_clock):
    seed, vol = 11, 0.5
    sim.configure(seed=seed, volatility=vol, jump_intensity=0, start_time=ANCHOR)
    rows, _, _ = await backfill("btcusd", size=10_000, count=10)
    returns = np.diff(np.log(rows["close"]))
    per_second = vol / math.sqrt(365 * 86400)
    assert returns.std() == pytest.approx(per_second, rel=0.05), f"seed {seed}"
    assert abs(returns.mean()) < 4 * per_second / math.sqrt(len(returns)), f"seed {seed}"
    kurtosis = ((returns - returns.mean()) ** 4).mean() / returns.var() ** 2
    assert kurtosis < 3.5, f"seed {seed}: no jumps, near-normal returns"

    sim.configure(seed=seed, jump_intensity=60, jump_size=0.01, start_time=ANCHOR)
    rows, _, _ = await backfill("btcusd", size=10_000, count=5)
    returns = np.diff(np.log(rows["close"]))
    kurtosis = ((returns - returns.mean()) ** 4).mean() / returns.var() ** 2
    assert kurtosis > 10, f"seed {seed}: jumps make fat tails"


async def test_quiet_seconds_give_flat_bars(autojump_clock):
    sim.configure(seed=3, tick_rate=2, start_time=ANCHOR)
    rows, _, _ = await backfill("spy", size=2000, count=1)
    quiet = rows["count"] == 0
    assert 0.3 < quiet.mean() < 0.9
    for field in ("open", "high", "low", "bar_wap"):
        assert np.array_equal(rows[field][quiet], rows["close"][quiet])
    follows = np.flatnonzero(quiet)[1:]
    assert np.array_equal(rows["close"][follows], rows["close"][follows - 1])
    assert np.all(rows["volume"][quiet] == 0)
    first, _, msgs, took = await collect(["spy"], 20)
    assert first["spy"]["last"] == rows["close"][-1]
    assert len(ticks_of(msgs)) == pytest.approx(40, abs=20)
    assert took == pytest.approx(20, abs=1)
