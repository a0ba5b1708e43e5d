"""Seeded bars for the backtest tests: a random walk of one-minute (or `step`-second) bars."""

from __future__ import annotations

import numpy as np

from engine.dtypes import ohlc_dtype


def walk(n: int, seed: int, start: int = 1_600_000_000, step: int = 60) -> np.ndarray:
    """`n` bars from `start`, `step` seconds apart: closes a seeded walk from 100 (0.3 % a bar),
    each open the close before, high and low 0.1 % beyond them."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    bars = np.zeros(n, dtype=ohlc_dtype)
    bars["time"] = start + step * np.arange(n)
    bars["open"] = np.r_[100.0, close[:-1]]
    bars["close"] = close
    bars["high"] = np.maximum(bars["open"], close) * 1.001
    bars["low"] = np.minimum(bars["open"], close) * 0.999
    bars["volume"] = 1.0
    return bars
