"""A checked actor run, and what it returns: the strategies with their parameters and
symbols, the feed's symbols, timeframe and provider options, and `ActorRunResult`.

Everything here runs in the root before any actor starts, so a wrong file, parameter, symbol
list or provider option is one clear error. Nothing here starts a process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.actors.daemon import feed_name
from engine.actors.supervise import StrategySlot
from engine.books import distinct_names
from engine.live import RunResult
from engine.provider import DEFAULT_PROVIDER, load_provider
from engine.sampler import parse_timeframe
from engine.strategy import StrategyError, load_strategy

__all__ = ["ActorRunResult", "ClearingError", "Plan", "plan_run", "accounts_for"]


class ClearingError(RuntimeError):
    """The clearing actor could not open an account (a bad name, a locked ledger, ...)."""


@dataclass
class ActorRunResult(RunResult):
    """A `RunResult` plus what the actors did: the feed daemon used, restarts, failures."""

    feed: str = ""
    feed_pid: int | None = None
    shared_feed: bool = False
    cpus: str = ""  # where this run put its actors (engine.actors.cpus)
    restarts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.strategies if s.error] + list(self.problems)

    def summary(self) -> str:
        how = "shared: started by another run" if self.shared_feed else "started by this run"
        where = f"pid {self.feed_pid}, {how}" if self.feed_pid else "not started"
        lines = [super().summary(), f"  actors: feed daemon {self.feed} ({where}), one actor "
                                    "per strategy, clearing actor"]
        if self.cpus:
            lines.append(f"  {self.cpus}")
        for name, count in self.restarts.items():
            if count:
                last = (self.failures.get(name) or ["?"])[-1].strip().splitlines()[-1]
                lines.append(f"  {name}: restarted {count} time(s); last failure: {last}")
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)


@dataclass
class Plan:
    """A checked actor run: strategies (with their own parameters and symbols), the feed's
    symbols, timeframe, provider and options."""

    slots: list[StrategySlot]
    symbols: list[str]
    timeframe: int
    provider: str
    options: dict[str, Any]

    @property
    def feed_name(self) -> str:
        return feed_name(self.provider, self.symbols, self.timeframe, self.options)


def _provider_spec(provider: str) -> str:
    path = Path(provider)
    if provider.endswith(".py") or (path.is_dir() and (path / "__init__.py").exists()):
        return str(path.resolve())  # child actors may start elsewhere
    return provider


def plan_run(paths: Sequence[str | Path], *, provider: str = DEFAULT_PROVIDER,
             provider_options: dict[str, Any] | None = None,
             symbols: Sequence[str] | None = None, timeframe: int | str | None = None,
             params: dict[str, Any] | None = None) -> Plan:
    """Load and check every strategy file, the parameters and the provider in this process,
    so a mistake is one clear error before any actor starts.

    A parameter goes to every strategy that declares it; one that none declares is an error.
    """
    if not paths:
        raise StrategyError("no strategy files given")
    classes = [load_strategy(p) for p in paths]
    # Two strategies of one class name trade the account as Name and Name#2 (engine.books).
    names = distinct_names([c.__name__ for c in classes])
    params = dict(params or {})
    unused = set(params)
    slots: list[StrategySlot] = []
    union: list[str] = []
    for path, cls, name in zip(paths, classes, names, strict=True):
        mine = {k: v for k, v in params.items() if k in cls.param_names()}
        unused -= set(mine)
        cls.validate_params(mine)
        syms = list(symbols or cls.symbols or [])
        if not syms:
            raise StrategyError(f"{cls.__name__} declares no symbols; pass --symbols")
        union.extend(s for s in syms if s not in union)
        slots.append(StrategySlot(path=str(Path(path).resolve()), name=name,
                                  params=mine, symbols=syms))
    if unused:
        known = "; ".join(f"{c.__name__}: {', '.join(c.param_names()) or 'none'}" for c in classes)
        raise StrategyError(f"no strategy has a parameter {sorted(unused)[0]!r} ({known})")
    frames = {c.timeframe for c in classes}
    if timeframe is None and len(frames) > 1:
        raise StrategyError(f"the strategies declare different timeframes "
                            f"({', '.join(sorted(frames))}); pass --timeframe")
    period = parse_timeframe(timeframe or classes[0].timeframe)
    spec = _provider_spec(provider)
    options = dict(provider_options or {})
    load_provider(spec).configure(**options)  # bad options fail here, not in the daemon
    return Plan(slots, union, period, spec, options)


def accounts_for(paper: Any) -> tuple[str, dict[str, dict | None]]:
    if paper is None:
        return "intents", {"intents": None}
    args = {"name": paper} if isinstance(paper, str) else dict(paper)
    name = args.get("name") or "paper"
    config = args.get("config")
    return name, {name: {"cash": args.get("cash"),
                         "config": config.model_dump() if config is not None else None,
                         "path": str(args["path"]) if args.get("path") else None,
                         "instruments": args.get("instruments") or None}}
