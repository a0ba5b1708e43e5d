"""A small deterministic evaluation function for the sweep tests and benchmark: an SMA cross
traded bar by bar on the close, computed with numpy on history attached read-only by token.

It stands in for the backtest (`engine.backtests.replay:evaluate_params`), with the same signature.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engine.shm import ShmArray


def _sma(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if n <= len(x):
        csum = np.cumsum(np.insert(x, 0, 0.0))
        out[n - 1:] = (csum[n:] - csum[:-n]) / n
    return out


def evaluate(strategy_path: str, params: dict, history_tokens: dict[str, dict],
             options: dict) -> dict[str, float]:
    """Metrics of an SMA(fast)/SMA(slow) cross, long above and short below, on every symbol.

    `options["spin"]` adds that many seconds of busy work (benchmarks of the pool).
    """
    fast, slow = int(params["fast"]), int(params["slow"])
    if not 0 < fast < slow:
        raise ValueError(f"need 0 < fast < slow, got fast={fast} slow={slow}")
    returns, trades, in_place = [], 0, 1.0
    for sym in sorted(history_tokens):
        token = history_tokens[sym]
        shm = ShmArray.attach(token)
        try:
            close = shm.array["close"]
            # Read in place: a read-only view of a segment this process maps by its name.
            if close.flags.writeable or close.flags.owndata:
                in_place = 0.0
            if token["name"] not in Path("/proc/self/maps").read_text():
                in_place = 0.0
            f, s = _sma(close, fast), _sma(close, slow)
            pos = np.where(f > s, 1.0, -1.0)
            pos[np.isnan(s)] = 0.0
            returns.append(pos[:-1] * np.diff(close) / close[:-1])
            trades += int(np.count_nonzero(np.diff(pos)))
        finally:
            shm.close()  # views still held keep the mapping until they go
    r = np.concatenate(returns)
    spin = float(options.get("spin", 0.0))
    until = time.perf_counter() + spin
    while time.perf_counter() < until:
        np.sqrt(np.arange(1000.0)).sum()
    std = float(r.std())
    return {"sharpe": float(r.mean() / std * np.sqrt(252 * 24)) if std else 0.0,
            "return_pct": float(np.expm1(np.log1p(r).sum()) * 100),
            "num_trades": float(trades), "in_place": in_place,
            "strategy_seen": float(Path(strategy_path).exists())}


def history(symbols: tuple[str, ...] = ("aaa", "bbb"), rows: int = 4000, seed: int = 1):
    """Random-walk OHLCV rows per symbol (engine.dtypes.ohlc_dtype)."""
    from engine.dtypes import ohlc_dtype

    rng = np.random.default_rng(seed)
    out = {}
    for i, sym in enumerate(symbols):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, rows)))
        bars = np.zeros(rows, dtype=ohlc_dtype)
        bars["time"] = 1_700_000_000 + 60 * np.arange(rows)
        bars["open"] = bars["high"] = bars["low"] = bars["close"] = close * (1 + i)
        bars["volume"] = 1.0
        out[sym] = bars
    return out
