"""The sweep's progress bar, on a fake clock: it redraws at least once a second while results
are slow to come, and its estimate is the remaining work at the rate measured since the first
result (start-up left out), growing while the sweep stalls instead of promising too much."""

from __future__ import annotations

import io
import re

import pytest

from engine.actors.sweep_local import TICK
from engine.actors.sweep_progress import ProgressBar, eta_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def draws(text: str) -> list[str]:
    return [d for d in re.split(r"[\r\n]", text.replace("\x1b[K", "")) if d]


def test_the_bar_redraws_every_second_while_a_slow_sweep_runs():
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar(out, width=10, clock=clock, tty=True)
    bar.begin(100)
    clock.now += 30.0  # workers starting: no result yet, no rate to promise
    bar.refresh()
    assert draws(out.getvalue())[-1] == "[..........] 0/100  -/s  eta ?"
    bar(1, 100, {})
    # One result every 10 s from here; the sweep loop calls refresh every TICK seconds.
    lines_at: list[float] = []

    def step(action) -> None:
        before = out.getvalue()
        action()
        if out.getvalue() != before:
            lines_at.append(clock.now)

    for done in range(2, 5):
        for _ in range(int(10 / TICK)):
            clock.now += TICK
            step(bar.refresh)
        step(lambda done=done: bar(done, 100, {}))
    gaps = [b - a for a, b in zip(lines_at, lines_at[1:], strict=False)]
    assert gaps
    assert max(gaps) <= 1.0 + 1e-9  # redrawn at least once a second
    assert len(lines_at) >= 3 * 9
    last = draws(out.getvalue())[-1]
    # 3 results in the 30 s since the first: 0.1/s, 96 to go: 960 s.
    assert last == "[..........] 4/100  0.1/s  eta 16 min 00 s"
    # A result right after a redraw is not drawn at once, but at the next tick.
    clock.now += 0.01
    bar(5, 100, {})
    assert "5/100" not in out.getvalue()
    clock.now += TICK
    bar.refresh()
    assert "5/100" in draws(out.getvalue())[-1]


def test_the_estimate_leaves_out_start_up_and_grows_while_the_sweep_stalls():
    # 40 s of start-up, then one result a second: the estimate is what is left at 1/s.
    assert eta_seconds(11, 100, first=40.0, first_done=1, now=50.0) == pytest.approx(89.0)
    # Stalled 20 s since: the same 10 results took 30 s, so 89 left take 267 s.
    assert eta_seconds(11, 100, first=40.0, first_done=1, now=70.0) == pytest.approx(267.0)
    assert eta_seconds(1, 100, first=40.0, first_done=1, now=40.0) is None
    assert eta_seconds(0, 100, first=None, first_done=0, now=99.0) is None
    assert eta_seconds(100, 100, first=40.0, first_done=1, now=99.0) == 0.0


def test_the_honest_estimate_on_a_sweep_at_a_steady_rate():
    # 100,000 combinations at 250/s after 20 s of start-up: at every point the estimate is
    # the time the rest really takes (the sweep showed 174,800 s for 40 s of work).
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar(out, clock=clock, tty=True)
    bar.begin(100_000)
    clock.now += 20.0
    start = clock.now
    for done in range(1, 100_001, 250):
        clock.now = start + (done - 1) / 250.0
        bar(done, 100_000, {})
        if done > 1:
            left = eta_seconds(done, 100_000, bar._first, bar._first_done, clock.now)
            assert left == pytest.approx((100_000 - done) / 250.0, rel=1e-9)
    bar(100_000, 100_000, {})
    # 20 s of start-up and 399 s of results.
    assert draws(out.getvalue())[-1].endswith("done in 6 min 59 s")


def test_without_a_terminal_a_line_per_tenth_and_a_closed_bar_after_an_interrupt():
    clock, out = FakeClock(), io.StringIO()
    bar = ProgressBar(out, clock=clock, tty=False)
    bar.begin(20)
    for done in range(1, 21):
        clock.now += 1.0
        bar(done, 20, {})
    lines = out.getvalue().splitlines()
    # The first result, then each new tenth (2 of 20 is the first tenth).
    assert [line.split()[1] for line in lines] == ["1/20"] + [f"{d}/20" for d in range(2, 21, 2)]
    tty = io.StringIO()
    bar = ProgressBar(tty, clock=clock, tty=True)
    bar.begin(10)
    bar(3, 10, {})
    bar.close()  # interrupted: the line is ended, and nothing more is drawn
    bar.refresh()
    bar(4, 10, {})
    assert tty.getvalue().endswith("\n")
    assert "4/10" not in tty.getvalue()
