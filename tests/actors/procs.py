"""Helpers for the actor tests: free ports, descendants, shared-memory mappings, and a
recorder of a run's actor events."""

from __future__ import annotations

import socket
from pathlib import Path

import trio


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def parent(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[1] if stat else None


def tree(pid: int) -> set[int]:
    """Every process below `pid` now, by parent links: zombies and resource trackers too."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def descendants(pid: int) -> list[int]:
    """Every live (not zombie) process below `pid`, but for multiprocessing's resource tracker
    (a process that creates shared memory keeps one for its lifetime)."""
    return [p for p in tree(pid) if alive(p) and "resource_tracker" not in cmdline(p)]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie or a dead process has exited: at most it waits to be
    reaped)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def mapped_segments(pid: int) -> set[str]:
    """Names of the /dev/shm segments mapped into process `pid`."""
    out = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[-1] if len(line.split()) >= 6 else ""
        if path.startswith("/dev/shm/"):
            out.add(path.removeprefix("/dev/shm/"))
    return out


class Events:
    """The run's actor events, with a way to wait for one that matches."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self._changed = trio.Event()

    def __call__(self, event: dict) -> None:
        self.seen.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, *, new: bool = False, **match) -> dict:
        """The first event so far that matches (with `new`, the first one from now on)."""
        start = len(self.seen) if new else 0
        while True:
            for event in self.seen[start:]:
                if all(event.get(k) == v for k, v in match.items()):
                    return event
            start = len(self.seen)
            await self._changed.wait()

    def quotes(self, strategy: str) -> int:
        counts = [e["quotes"] for e in self.seen
                  if e["event"] == "strategy_stats" and e["strategy"] == strategy]
        return counts[-1] if counts else 0

    async def more_quotes(self, strategy: str, more: int) -> None:
        target = self.quotes(strategy) + more
        while self.quotes(strategy) < target:
            await self.wait(new=True, event="strategy_stats", strategy=strategy)
