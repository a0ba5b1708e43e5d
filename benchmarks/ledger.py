"""Ledger figures: append events/s with batches of 1, 100 and 1,000 (one fsync per batch), open
(recovery scan) and replay (read + decode) events/s; SQLite in WAL mode as the reference.

Run: uv run python benchmarks/ledger.py [DIR]   (DIR defaults to the system temp dir; its
filesystem decides the fsync cost, so point it at the disk the data directory lives on.)
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from engine.clearing.ledger import Ledger
from engine.orders import OrderFilled


def make_fills(n: int) -> list[OrderFilled]:
    return [OrderFilled(time=1.7e9 + i, account="bench", fill_id=i, client_id=f"o{i}",
                        symbol="BTCUSDT", side="buy", price=65000.5, size=0.01, fee=0.0065,
                        liquidity="taker", remaining=0.0) for i in range(n)]


def append_rate(directory: Path, events: list[OrderFilled], batch: int) -> float:
    with Ledger.open(directory) as ledger:
        t0 = time.perf_counter()
        for i in range(0, len(events), batch):
            ledger.append(events[i:i + batch])
        return len(events) / (time.perf_counter() - t0)


def sqlite_rate(path: Path, events: list[OrderFilled], batch: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=full")  # fsync the WAL at every commit, as the ledger does
    db.execute("create table events (seq integer primary key, payload blob not null)")
    t0 = time.perf_counter()
    for i in range(0, len(events), batch):
        rows = [(type(e).__pydantic_serializer__.to_json(e),) for e in events[i:i + batch]]
        db.execute("begin")
        db.executemany("insert into events (payload) values (?)", rows)
        db.execute("commit")
    rate = len(events) / (time.perf_counter() - t0)
    db.close()
    return rate


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else None
    events = make_fills(200_000)
    sizes = {1: 3_000, 100: 100_000, 1000: 200_000}  # enough batches for ~1 s each
    print(f"Ledger of {len(events[0].model_dump_json())}-byte OrderFilled events, one fsync per batch")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        print(f"  on {tmp}")
        for batch, n in sizes.items():
            log = append_rate(Path(tmp) / f"log{batch}", events[:n], batch)
            lite = sqlite_rate(Path(tmp) / f"lite{batch}.db", events[:n], batch)
            print(f"  append, batches of {batch:5d}: {log / 1e3:8.1f}k events/s   "
                  f"(SQLite WAL, synchronous=full: {lite / 1e3:8.1f}k)")
        directory = Path(tmp) / "log1000"
        t0 = time.perf_counter()
        ledger = Ledger.open(directory)
        opened = time.perf_counter() - t0
        with ledger:
            t0 = time.perf_counter()
            n = sum(1 for _ in ledger.events())
            replay = time.perf_counter() - t0
        print(f"  open (scan + CRC of {n} records): {n / opened / 1e6:8.2f}M events/s")
        print(f"  replay (read + decode):           {n / replay / 1e3:8.1f}k events/s")


if __name__ == "__main__":
    main()
