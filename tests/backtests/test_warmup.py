"""Warm-up: derived from the declared indicators (or declared), and proved by replaying with N
and 2N bars of history (`engine check-warmup`)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import Strategy
from engine.backtests.replay import BacktestError, run_backtest
from engine.backtests.warmup_check import check_warmup
from engine.dtypes import ohlc_dtype
from engine.warmup import SETTLE, strategy_warmup

ROOT = Path(__file__).resolve().parents[2]


def walk(n: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    bars = np.zeros(n, dtype=ohlc_dtype)
    bars["time"] = 1_600_000_000 + 60 * np.arange(n)
    bars["open"] = np.r_[close[0], close[:-1]]
    bars["high"] = np.maximum(bars["open"], close) * 1.001
    bars["low"] = np.minimum(bars["open"], close) * 0.999
    bars["close"] = close
    bars["volume"] = 1.0
    bars["bar_wap"] = close
    return bars


class Declares(Strategy):
    symbols = ("x",)
    spec: list = []

    def on_start(self):
        made = {}
        for name, kind, args in self.spec:
            made[name] = self.ctx.indicator(kind, *[made.get(a, a) for a in args])
        self.made = made
        self.warm = None

    def on_stop(self):
        self.warm = strategy_warmup(self)


def derived(spec) -> int:
    strat = Declares(spec=spec)
    run_backtest(strat, {"x": walk(50)}, bootstrap=False)
    return strat.warm


def test_windowed_indicators_are_warm_once_their_window_is_full():
    assert derived([("s", "sma", (30,))]) == 30
    assert derived([("h", "highest", (10,)), ("b", "bbands", (20,))]) == 20
    assert derived([]) == 0


def test_recursive_indicators_wait_until_their_seed_weighs_under_the_tolerance():
    alpha = 2 / 21
    settle = math.ceil(math.log(SETTLE) / math.log(1 - alpha))
    assert (1 - alpha) ** settle < SETTLE <= (1 - alpha) ** (settle - 1)
    assert derived([("e", "ema", (20,))]) == 20 + settle
    wilder = math.ceil(math.log(SETTLE) / math.log(1 - 1 / 14))
    assert derived([("r", "rsi", (14,))]) == 15 + wilder


def test_an_indicator_of_indicators_adds_its_own_to_its_inputs():
    fast, slow = derived([("f", "sma", (5,))]), derived([("s", "sma", (12,))])
    assert derived([("f", "sma", (5,)), ("s", "sma", (12,)),
                    ("c", "cross", ("f", "s"))]) == max(fast, slow) + 1


def test_a_declared_warmup_wins():
    class Fixed(Declares):
        warmup = 500

    strat = Fixed(spec=[("s", "sma", (5,))])
    run_backtest(strat, {"x": walk(50)}, bootstrap=False)
    assert strat.warm == 500


STRAT = (
    "from engine import Strategy\n\n"
    "class Mixed(Strategy):\n"
    "    symbols = ('x',)\n\n"
    "    def on_start(self):\n"
    "        self.s = self.ctx.indicator('sma', 30)\n"
    "        self.e = self.ctx.indicator('ema', 20)\n"
    "        self.r = self.ctx.indicator('rsi', 14)\n"
)


def test_the_derived_warmup_passes_and_a_short_one_names_the_recursive_indicators(tmp_path):
    path = tmp_path / "mixed.py"
    path.write_text(STRAT)
    data = {"x": walk(1500)}
    good = check_warmup(str(path), data)
    assert good.ok
    assert good.bars == good.derived
    assert [line.name for line in good.lines] == [
        "sma(30, False) value on x", "ema(20) value on x", "rsi(14) value on x"]
    short = check_warmup(str(path), data, bars=40, window=40)
    assert not short.ok
    failed = {line.name for line in short.lines if not line.ok}
    assert failed == {"ema(20) value on x", "rsi(14) value on x"}  # the SMA is exact at 30
    with pytest.raises(BacktestError, match="needs"):
        check_warmup(str(path), {"x": walk(100)})


def test_check_warmup_command_exits_non_zero_naming_what_differs(tmp_path):
    path = tmp_path / "mixed.py"
    path.write_text(STRAT)
    csv = tmp_path / "walk.csv"
    bars = walk(400)
    lines = ["time,open,high,low,close,volume"] + [
        f"{int(b['time'])},{b['open']},{b['high']},{b['low']},{b['close']},1" for b in bars]
    csv.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-m", "engine.cli", "check-warmup", str(path),
                          "--data", str(csv), "--bars", "40"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "FAIL  ema(20) value on walk" in out.stdout
    assert "PASS  sma(30, False) value on walk" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "check-warmup", str(path),
                          "--data", str(csv), "--bars", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2
    assert "--bars must be a positive number of bars" in bad.stderr
