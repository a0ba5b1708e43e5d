"""Warm-up in live runs: the feed pages a provider's history until a strategy's warm-up is
covered, and a strategy is not called before it is warm, on trio's autojump clock."""

from __future__ import annotations

import csv
import datetime
import logging
import math
import types
from pathlib import Path

import numpy as np
import pytest
import trio

from engine import LiveClock, Strategy, run_live
from engine.clock import current_clock
from engine.dtypes import ohlc_dtype
from engine.feed import FeedError, open_feed
from engine.provider import Provider
from engine.warming import probe_warmup
from tests.engine.scripted import make_provider

T0 = 1_700_000_040.0  # a whole minute
# Real seconds a callback may hold the loop: a first indicator read compiles its kernel, and
# this machine is shared; the watchdog is not what these tests are about.
BUDGET = 60.0


def wilder_settle(period: int) -> int:
    """Bars until a seed's weight (1 - 1/period)^n is below 1e-8 (the warm-up's rule)."""
    n = 0
    while (1 - 1 / period) ** n >= 1e-8:
        n += 1
    return n


def paging_provider(*, per_frame: int = 100, depth: int = 1_000_000, period: int = 1,
                    fixed: bool = False, every: float = 1.0):
    """The scripted stream, with history of `period`-second bars ending at the clock: frame j
    is the `per_frame` bars before frame j-1, at most `depth` bars in all; each call's `count`
    is recorded. `fixed`: every call gives the newest `per_frame` bars whatever `count` asks
    (as Kraken's OHLC, which serves its latest 720 only)."""
    calls: list[int] = []
    base = make_provider(("aaa", "bbb"), every=every)

    async def backfill_bars(sym, shm, count=10, task_status=trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            task_status.started(scope)
            calls.append(count)
            end = int(current_clock().now()) // period * period
            frames = 1 if fixed else count
            for j in range(frames):
                lo, hi = j * per_frame, min((j + 1) * per_frame, depth)
                if lo >= hi:
                    break
                rows = np.zeros(hi - lo, dtype=ohlc_dtype)
                ago = np.arange(hi, lo, -1)  # oldest first
                rows["time"] = end - period * ago
                rows["open"] = rows["high"] = rows["low"] = rows["close"] = 50.0 + (ago % 7)
                rows["bar_wap"] = rows["close"]
                rows["volume"] = 1.0
                rows["count"] = 1
                await trio.lowlevel.checkpoint()  # a real source is awaited here
                if j == 0:
                    shm.push(rows[len(rows) - min(len(rows), shm.room_after):])
                else:
                    room = shm.room_before
                    if not room:
                        break
                    shm.prepend(rows[max(0, len(rows) - room):])

    mod = types.ModuleType("paging")
    mod.ohlc_dtype = ohlc_dtype
    mod.stream_quotes = base.module.stream_quotes
    mod.backfill_bars = backfill_bars
    return Provider(name="paging", module=mod), calls


class RsiSma(Strategy):
    """RSI(14) and SMA(50) over aaa; records what it sees when first called."""

    symbols = ("aaa",)
    timeframe = "1m"

    def on_start(self):
        self.rsi = self.ctx.indicator("rsi", 14)
        self.sma = self.ctx.indicator("sma", 50)
        self.starts = getattr(self, "starts", 0) + 1
        self.calls = []

    def on_bar(self, symbol):
        self.calls.append(("bar", len(self.ctx.ohlcv(symbol)), self.rsi[-1], self.sma[-1]))

    def on_quote(self, quote):
        self.calls.append(("quote", len(self.ctx.ohlcv(quote["symbol"])), quote["time"], None))


RSI_SMA_NEED = max(14 + 1 + wilder_settle(14), 50)  # 264 one-minute bars


async def test_the_warmup_is_derived_before_the_run_from_a_dry_start(autojump_clock):
    need = await probe_warmup(RsiSma(), symbols=["aaa"], timeframe=60)
    assert (need.bars, need.how, need.note) == (RSI_SMA_NEED, "derived", None)


async def test_the_feed_pages_the_provider_until_the_warmup_is_covered(autojump_clock):
    provider, calls = paging_provider(per_frame=100)
    strat = RsiSma()
    result = await run_live([strat], provider=provider, symbols=["aaa"], timeframe="1m",
                            duration=150, clock=LiveClock(T0), callback_budget=BUDGET)
    assert result.ok, result.errors
    load = result.history["aaa"]
    # 10 frames first (1000 one-second rows: 16 minutes), then one call for the rest.
    assert calls[0] == 10
    assert len(calls) == 2
    assert calls[1] * 100 >= RSI_SMA_NEED * 60
    assert load.bars >= RSI_SMA_NEED
    assert (load.need, load.rows, load.period) == (RSI_SMA_NEED, calls[1] * 100, 1)
    # Warm from the start: called from the first quote, every indicator value defined.
    kind, seen, *_ = strat.calls[0]
    assert seen == load.bars
    bars = [c for c in strat.calls if c[0] == "bar"]
    assert len(bars) == 2
    assert all(math.isfinite(rsi) and math.isfinite(sma) for _, _, rsi, sma in bars)
    assert strat.starts == 1  # the dry start ran on a copy, never on the strategy itself
    assert f"aaa {load.bars} bars of 1m" in result.summary()
    assert f"RsiSma: {RSI_SMA_NEED} bars (derived from its indicators)" in result.summary()


class Sma20(Strategy):
    symbols = ("aaa",)
    timeframe = "10s"

    def on_start(self):
        self.sma = self.ctx.indicator("sma", 20)
        self.calls = []

    def on_bar(self, symbol):
        self.calls.append(("bar", len(self.ctx.ohlcv(symbol)), self.sma[-1], self.ctx.now))

    def on_quote(self, quote):
        self.calls.append(("quote", len(self.ctx.ohlcv(quote["symbol"])), math.nan,
                           quote["time"]))


async def test_too_little_history_warns_and_live_bars_complete_the_warmup(autojump_clock,
                                                                          caplog):
    # 100 one-second rows in all, to T0 + 5: 10 closed 10 s bars (the first cut short) and
    # one forming.
    provider, calls = paging_provider(per_frame=100, depth=100, every=0.5)
    strat = Sma20()
    caplog.set_level(logging.INFO)
    result = await run_live([strat], provider=provider, symbols=["aaa"], timeframe="10s",
                            duration=200, clock=LiveClock(T0 + 5), callback_budget=BUDGET)
    assert result.ok, result.errors
    load = result.history["aaa"]
    assert (load.bars, load.need) == (10, 20)
    assert len(calls) == 2  # the second call gave nothing older: the provider has no more
    assert ("history of aaa from provider 'paging': 10 closed 10s bars (100 rows in 2 call(s)"
            in caplog.text)
    assert "the warm-up needs 20; the provider has no older history" in caplog.text
    assert "strategy Sma20 needs 20 closed 10s bars to be warm (aaa has 10)" in caplog.text
    # Not called at all until the bar that makes 20 closes; then for every bar and quote.
    first = strat.calls[0]
    assert first[:2] == ("bar", 20)
    assert math.isfinite(first[2])
    assert first[3] == T0 + 100  # when the tenth live bar closes
    # Live bars close at T0 + 10 ... T0 + 200: the strategy heard those from the tenth on.
    assert [c[1] for c in strat.calls if c[0] == "bar"] == list(range(20, 31))
    assert len([c for c in strat.calls if c[0] == "quote"]) >= 150
    assert "strategy Sma20 is warm on aaa (20 bars)" in caplog.text


async def test_a_kraken_like_provider_that_cannot_page_is_asked_twice_then_warned(
        autojump_clock, caplog):
    # Every call gives the same newest 720 one-minute bars, as Kraken's OHLC does.
    provider, calls = paging_provider(per_frame=720, period=60, fixed=True)
    async with open_feed(provider, ["aaa"], timeframe=60, warmup=1000,
                         clock=LiveClock(T0)) as feed:
        assert len(feed.bars["aaa"]) == 720
        assert feed.history["aaa"].short
    assert len(calls) == 2
    assert calls[1] > calls[0]
    assert "720 closed 1m bars" in caplog.text
    assert "the warm-up needs 1000; the provider has no older history" in caplog.text


async def test_a_warmup_beyond_the_history_cap_is_one_clear_error(autojump_clock):
    provider, _ = paging_provider(per_frame=100)
    with pytest.raises(FeedError, match=r"provider 'paging': a warm-up of 5000 1h bars of aaa "
                                        r"needs about [\d,]+ rows of the provider's 1 s history, "
                                        r"more than the 1,000,000 a symbol may hold"):
        async with open_feed(provider, ["aaa"], timeframe=3600, warmup=5000,
                             history_cap=1_000_000, clock=LiveClock(T0)):
            pass


async def test_history_zero_backfills_nothing_and_the_strategy_warms_on_live_bars(
        autojump_clock):
    provider, calls = paging_provider(per_frame=100, every=0.5)
    strat = Sma20()
    result = await run_live([strat], provider=provider, symbols=["aaa"], timeframe="10s",
                            duration=250, clock=LiveClock(T0), history=0,
                            callback_budget=BUDGET)
    assert result.ok, result.errors
    assert calls == []
    assert result.history == {}
    assert strat.calls[0][:2] == ("bar", 20)


class Declared(Strategy):
    symbols = ("aaa",)
    timeframe = "10s"
    warmup = 30
    starts = 0

    def on_start(self):
        type(self).starts += 1
        self.calls = []

    def on_bar(self, symbol):
        self.calls.append(len(self.ctx.ohlcv(symbol)))


async def test_a_declared_warmup_is_loaded_without_a_dry_start(autojump_clock):
    provider, calls = paging_provider(per_frame=100, every=0.5)
    strat = Declared()
    result = await run_live([strat], provider=provider, symbols=["aaa"], timeframe="10s",
                            duration=30, clock=LiveClock(T0), history=1,
                            callback_budget=BUDGET)
    assert result.ok, result.errors
    assert Declared.starts == 1
    assert calls[0] == 1  # --history 1, then paged for the 30 bars declared
    assert len(calls) == 2
    assert result.history["aaa"].bars >= 30
    assert strat.calls[0] == result.history["aaa"].bars + 1


class TradesAtStart(Strategy):
    symbols = ("aaa",)
    timeframe = "10s"

    def on_start(self):
        self.fast = self.ctx.indicator("ema", 5)
        self.ctx.buy("aaa", 1)
        self.log("started")


async def test_the_dry_start_neither_trades_nor_logs(autojump_clock, caplog):
    provider, _ = paging_provider(per_frame=100, every=0.5)
    caplog.set_level(logging.INFO)
    result = await run_live([TradesAtStart()], provider=provider, symbols=["aaa"],
                            timeframe="10s", duration=5, clock=LiveClock(T0),
                            callback_budget=BUDGET)
    assert result.ok, result.errors
    assert len(result.orders) == 1  # the real start's order only
    assert caplog.text.count("started") == 1
    # EMA(5): its 5-bar seed, then until the seed's weight (1 - 1/3)^n is below 1e-8.
    assert result.warmup[0].bars == 5 + wilder_settle(3)


class ReadsBarsAtStart(Strategy):
    symbols = ("aaa",)
    timeframe = "10s"

    def on_start(self):
        self.sma = self.ctx.indicator("sma", 12)
        self.last = self.ctx.ohlcv("aaa")["close"][-1]  # no bars in the dry pass: IndexError
        self.ema = self.ctx.indicator("ema", 30)


async def test_a_dry_start_that_fails_counts_what_it_declared_and_says_so(autojump_clock,
                                                                          caplog):
    need = await probe_warmup(ReadsBarsAtStart(), symbols=["aaa"], timeframe=10)
    assert need.bars == 12
    assert "on_start raised IndexError" in need.note
    assert "declare `warmup = N` on the class" in caplog.text


SAMPLE = Path(__file__).resolve().parents[2] / "providers" / "csvfile" / "samples" / "demo_hourly.csv"


@pytest.mark.parametrize(("warmup", "bars", "calls"), [(1500, 2000, 2), (2500, 2000, 3)])
async def test_csvfile_history_is_paged_to_the_warmup_or_to_the_files_start(
        autojump_clock, caplog, warmup, bars, calls):
    # The file's 2000 hourly bars, 1000 a frame: one frame first, then all of it.
    async with open_feed("csvfile", [str(SAMPLE)], timeframe=3600, history=1, warmup=warmup,
                         clock=LiveClock()) as feed:
        load = feed.history[str(SAMPLE)]
        assert (load.bars, load.calls, load.rows) == (bars, calls, 2000)
        assert len(feed.bars[str(SAMPLE)]) == bars
        assert load.first == _first_time()
    assert load.short == (warmup > bars)
    assert ("the provider has no older history" in caplog.text) == (warmup > bars)


def _first_time() -> float:
    # The file's first row, read with the csv module, not the provider.
    with SAMPLE.open() as f:
        row = next(csv.DictReader(f))
    when = datetime.datetime.fromisoformat(row["Datetime"])
    return when.replace(tzinfo=when.tzinfo or datetime.UTC).timestamp()
