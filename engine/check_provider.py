"""The provider conformance checker behind `engine check-provider MODULE`.

It drives a provider module through the whole contract of SPEC.md, against the real clock, and
reports one pass/fail line per rule with the reason. It only reads what the provider does; it
never changes the provider or anything it stores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from engine.provider import Provider, ProviderError, load_provider, surface_problems
from engine.quotes import QuoteError, validate_quote
from engine.shm import ShmArray, ShmError, tick_dtype

__all__ = ["RuleResult", "CheckReport", "check_provider", "run_check_provider"]

UNKNOWN_SYMBOL = "zz_no_such_symbol_zz"


@dataclass(frozen=True)
class RuleResult:
    rule: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    provider: str
    symbols: list[str]
    results: list[RuleResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def add(self, rule: str, ok: bool, detail: str) -> None:
        self.results.append(RuleResult(rule, ok, detail))

    def failed(self) -> list[str]:
        return [r.rule for r in self.results if not r.ok]

    def format(self) -> str:
        lines = [f"check-provider {self.provider} (symbols: {', '.join(self.symbols) or '-'})"]
        for r in self.results:
            lines.append(f"  {'PASS' if r.ok else 'FAIL'}  {r.rule:<22} {r.detail}")
        passed = sum(r.ok for r in self.results)
        verdict = "conforms" if self.ok else "does NOT conform"
        lines.append(f"{passed}/{len(self.results)} rules pass: {self.provider} {verdict}")
        return "\n".join(lines)


class _Status:
    """A task_status stand-in that records when and with what `started` was called."""

    def __init__(self, on_started: Callable[[], Any] | None = None) -> None:
        self.event = trio.Event()
        self.value: Any = None
        self.calls = 0
        self.at: float | None = None
        self._on_started = on_started
        self.snapshot: Any = None

    def started(self, value: Any = None) -> None:
        self.calls += 1
        if self.calls == 1:
            self.value = value
            self.at = trio.current_time()
            if self._on_started is not None:
                self.snapshot = self._on_started()
            self.event.set()


async def _run_capturing(status: _Status, box: dict, fn: Callable, *args: Any) -> None:
    done = box["done"]
    try:
        await fn(*args, task_status=status)
        box["returned"] = True
    except trio.Cancelled:
        raise
    except BaseException as exc:  # noqa: BLE001 - everything the provider raises is evidence
        box["error"] = exc
    finally:
        done.set()


async def _wait_started_or_done(status: _Status, box: dict) -> None:
    """Return once the provider called started() or its call ended, whichever comes first."""
    async with trio.open_nursery() as nursery:

        async def first(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(first, status.event)
        nursery.start_soon(first, box["done"])


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _check_stream(
    report: CheckReport, provider: Provider, symbols: list[str], *, timeout: float, messages: int
) -> None:
    send, recv = trio.open_memory_channel(100_000)
    tick_shm = ShmArray.create(tick_dtype, 1 << 16, start=0)
    feed_is_live = trio.Event()
    status = _Status(on_started=lambda: recv.statistics().current_buffer_used)
    box: dict[str, Any] = {"done": trio.Event()}
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                _run_capturing,
                status,
                box,
                provider.stream_quotes,
                send,
                list(symbols),
                tick_shm,
                feed_is_live,
            )
            t0 = trio.current_time()
            with trio.move_on_after(timeout):
                await _wait_started_or_done(status, box)
            if not status.event.is_set():
                why = (
                    f"raised before started: {_describe(box['error'])}"
                    if "error" in box
                    else "returned without calling started"
                    if "returned" in box
                    else f"task_status.started was not called within {timeout:g} s"
                )
                report.add("startup", False, why)
                nursery.cancel_scope.cancel()
                return
            _check_started_value(report, provider, symbols, status, t0)
            await _check_messages(
                report,
                provider,
                symbols,
                recv,
                box,
                feed_is_live,
                timeout=timeout,
                messages=messages,
            )
            # Prompt cancellation: the stream must end within a second of being cancelled.
            t_cancel = trio.current_time()
            nursery.cancel_scope.cancel()
        took = trio.current_time() - t_cancel
        if "error" in box:
            report.add("cancellation", False, f"raised while cancelled: {_describe(box['error'])}")
        else:
            report.add("cancellation", took <= 1.0, f"ended {took * 1000:.0f} ms after cancel")
    finally:
        tick_shm.close()
        tick_shm.unlink()


def _check_started_value(
    report: CheckReport, provider: Provider, symbols: list[str], status: _Status, t0: float
) -> None:
    value = status.value
    took = (status.at or t0) - t0
    if not (
        isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, dict) for v in value)
    ):
        report.add(
            "startup",
            False,
            f"started() got {type(value).__name__}, expected a tuple "
            "(init_msgs: dict, first_quotes: dict)",
        )
        return
    report.add("startup", True, f"started((init_msgs, first_quotes)) after {took * 1000:.0f} ms")
    init_msgs, first_quotes = value
    missing = [s for s in symbols if s not in init_msgs]
    report.add(
        "init_msgs",
        not missing,
        f"no symbol info for {missing}" if missing else "symbol info for every symbol",
    )
    problems = []
    for sym in symbols:
        if sym not in first_quotes:
            problems.append(f"{sym!r}: no first quote")
            continue
        try:
            q = validate_quote(first_quotes[sym], provider.name, symbols, require_last=True)
            if q.symbol != sym:
                problems.append(f"{sym!r}: first quote names {q.symbol!r}")
        except QuoteError as exc:
            problems.append(str(exc))
    report.add(
        "first_quotes",
        not problems,
        "; ".join(problems) if problems else "a first quote with 'last' for every symbol",
    )
    early = status.snapshot or 0
    report.add(
        "nothing_before_started",
        early == 0,
        f"{early} messages were sent before started()"
        if early
        else "no message sent before started()",
    )


async def _check_messages(
    report: CheckReport,
    provider: Provider,
    symbols: list[str],
    recv: trio.MemoryReceiveChannel,
    box: dict,
    feed_is_live: trio.Event,
    *,
    timeout: float,
    messages: int,
) -> None:
    got = 0
    bad: list[str] = []
    ticks = 0
    with trio.move_on_after(timeout):
        while got < messages:
            msg = await recv.receive()
            got += 1
            try:
                q = validate_quote(msg, provider.name, symbols)
                ticks += len(q.ticks)
            except QuoteError as exc:
                if len(bad) < 3:
                    bad.append(str(exc))
                else:
                    bad.append("...")
                    break
    if "error" in box:
        report.add("quote_stream", False, f"stream_quotes raised: {_describe(box['error'])}")
    elif bad:
        report.add("tick_schema", False, "; ".join(bad))
    elif got == 0:
        report.add("quote_stream", False, f"no quote message within {timeout:g} s")
    else:
        report.add("tick_schema", True, f"{got} quotes, {ticks} ticks, all valid")
    with trio.move_on_after(timeout if not feed_is_live.is_set() else 0):
        await feed_is_live.wait()
    report.add(
        "feed_is_live",
        feed_is_live.is_set(),
        "set once data flowed"
        if feed_is_live.is_set()
        else f"feed_is_live was not set within {timeout:g} s of streaming",
    )


async def _check_unknown_symbol(report: CheckReport, provider: Provider, *, timeout: float) -> None:
    send, _recv = trio.open_memory_channel(1000)
    tick_shm = ShmArray.create(tick_dtype, 1024, start=0)
    status = _Status()
    box: dict[str, Any] = {"done": trio.Event()}
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                _run_capturing,
                status,
                box,
                provider.stream_quotes,
                send,
                [UNKNOWN_SYMBOL],
                tick_shm,
                trio.Event(),
            )
            with trio.move_on_after(timeout):
                await _wait_started_or_done(status, box)
            nursery.cancel_scope.cancel()
    finally:
        tick_shm.close()
        tick_shm.unlink()
    if status.event.is_set():
        report.add("unknown_symbol", False, f"started() was called for {UNKNOWN_SYMBOL!r}")
    elif "error" in box:
        named = UNKNOWN_SYMBOL in str(box["error"])
        report.add(
            "unknown_symbol",
            named,
            f"raised before started: {_describe(box['error'])[:120]}"
            if named
            else f"the error does not name the symbol: {_describe(box['error'])[:120]}",
        )
    else:
        report.add("unknown_symbol", False, f"neither raised nor started within {timeout:g} s")


def _bar_problems(rows: np.ndarray) -> list[str]:
    problems = []
    times = rows["time"]
    if len(times) > 1 and not np.all(np.diff(times) > 0):
        i = int(np.argmin(np.diff(times) > 0))
        problems.append(f"bars not in strictly increasing time order at rows {i}..{i + 1}")
    o, h, low, c = rows["open"], rows["high"], rows["low"], rows["close"]
    with np.errstate(invalid="ignore"):
        checks = {
            "non-finite price": ~(
                np.isfinite(o) & np.isfinite(h) & np.isfinite(low) & np.isfinite(c)
            ),
            "high below open/close/low": (h < np.maximum(o, c)) | (h < low),
            "low above open/close": low > np.minimum(o, c),
            "negative volume": rows["volume"] < 0,
            "negative count": rows["count"] < 0,
            "bar_wap outside low..high": np.isfinite(rows["bar_wap"])
            & (
                (rows["bar_wap"] < low - 1e-9 * np.abs(low))
                | (rows["bar_wap"] > h + 1e-9 * np.abs(h))
            ),
            "time before 1970 or after 2200": (times < 0) | (times > 7_258_118_400),
        }
    for what, mask in checks.items():
        if mask.any():
            problems.append(
                f"{what} in {int(mask.sum())} rows (first at row {int(np.argmax(mask))})"
            )
    return problems


async def _run_backfill(
    provider: Provider, sym: str, shm: ShmArray, count: int, timeout: float
) -> tuple[_Status, dict, float]:
    status = _Status()
    box: dict[str, Any] = {"done": trio.Event()}
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run_capturing, status, box, provider.backfill_bars, sym, shm, count)
        with trio.move_on_after(timeout):
            await box["done"].wait()
        nursery.cancel_scope.cancel()
    return status, box, t0


async def _check_backfill(
    report: CheckReport, provider: Provider, sym: str, *, timeout: float, count: int
) -> None:
    dtype = provider.ohlc_dtype
    with ShmArray.create(dtype, 400_000) as shm:
        status, box, t0 = await _run_backfill(provider, sym, shm, count, timeout)
        if not status.event.is_set():
            report.add("backfill_started", False, "task_status.started was never called")
        else:
            took = (status.at or t0) - t0
            scope_ok = isinstance(status.value, trio.CancelScope)
            ok = took <= 0.5 and scope_ok
            report.add(
                "backfill_started",
                ok,
                f"started(cancel_scope) after {took * 1000:.0f} ms"
                if ok
                else f"started after {took * 1000:.0f} ms with {type(status.value).__name__}"
                " (must be at once, with a trio.CancelScope)",
            )
        if "error" in box:
            report.add("backfill_rows", False, f"backfill_bars raised: {_describe(box['error'])}")
        elif "returned" not in box:
            report.add("backfill_rows", False, f"backfill_bars did not finish within {timeout:g} s")
        elif len(shm) == 0:
            report.add("backfill_rows", False, f"no rows written for {sym!r}")
        else:
            rows = shm.array
            problems = _bar_problems(rows)
            report.add(
                "backfill_rows",
                not problems,
                "; ".join(problems)
                if problems
                else f"{len(rows)} sane bars in time order for {sym!r}",
            )
    # A buffer with room for 16 rows each way: the provider must stop at the bounds, not overrun.
    with ShmArray.create(dtype, 32, start=16) as small:
        _, box, _ = await _run_backfill(provider, sym, small, count, timeout)
        if "error" in box:
            err = box["error"]
            why = "tried to write past the buffer: " if isinstance(err, ShmError) else "raised: "
            report.add("backfill_bounds", False, why + _describe(err))
        elif "returned" not in box:
            report.add("backfill_bounds", False, f"did not finish within {timeout:g} s")
        else:
            problems = _bar_problems(small.array)
            report.add(
                "backfill_bounds",
                not problems and len(small) > 0,
                "; ".join(problems)
                if problems
                else f"filled {len(small)} of 32 rows in order, no overrun"
                if len(small)
                else "wrote nothing into a 32-row buffer",
            )


async def check_provider(
    provider: Provider | str,
    symbols: list[str] | None = None,
    *,
    timeout: float = 5.0,
    messages: int = 50,
    count: int = 2,
) -> CheckReport:
    """Drive a provider through the spec's contract and return one result per rule."""
    name = provider if isinstance(provider, str) else provider.name
    report = CheckReport(provider=name, symbols=list(symbols or []))
    try:
        loaded = provider if isinstance(provider, Provider) else load_provider(name, check=False)
    except ProviderError as exc:
        report.add("import", False, str(exc))
        return report
    problems = surface_problems(loaded.module)
    report.add(
        "surface",
        not problems,
        "; ".join(problems) if problems else "ohlc_dtype, stream_quotes, backfill_bars",
    )
    if problems:
        return report
    if not symbols:
        found = loaded.search_symbols("")
        if not found:
            report.add("symbols", False, "no --symbols given and search_symbols('') found none")
            return report
        symbols = found[:2]
        report.symbols = symbols
    await _check_stream(report, loaded, symbols, timeout=timeout, messages=messages)
    await _check_unknown_symbol(report, loaded, timeout=timeout)
    await _check_backfill(report, loaded, symbols[0], timeout=max(timeout, 30.0), count=count)
    return report


def run_check_provider(
    module: str, symbols: list[str] | None = None, options: dict[str, str] | None = None, **kw: Any
) -> CheckReport:
    """Run the checker in a fresh trio loop (for the CLI and notebooks)."""
    try:
        provider = load_provider(module, check=False)
        provider.configure(**(options or {}))
    except ProviderError as exc:
        report = CheckReport(provider=module, symbols=list(symbols or []))
        report.add("import", False, str(exc))
        return report
    return trio.run(lambda: check_provider(provider, symbols, **kw))
