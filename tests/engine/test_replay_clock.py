"""A replay's clock following the bar count reads the close of the bar counted last, yields to
a time set explicitly (a point inside a bar), goes back to the count when that is cleared,
and keeps the time reached when it stops following."""

from __future__ import annotations

import numpy as np

from engine.clock import ReplayClock


def test_following_the_bar_count_reads_each_bar_s_close_and_yields_to_a_set_time():
    closes = np.array([160, 220, 280, 340], dtype=np.int64)
    cell = [7]  # bars counted before these four: the first of them is bar 8
    clock = ReplayClock(100.0)
    clock.follow(closes, cell, 8)
    seen = []
    for _ in closes:
        cell[0] += 1
        seen.append(clock.now())
    assert seen == [160, 220, 280, 340]
    assert all(type(t) is int for t in seen)  # as the closes' own Python numbers
    cell[0] = 9
    clock._now = 191.5  # a point inside the next bar: it wins while set
    assert clock.now() == 191.5
    clock._now = None
    assert clock.now() == 220
    clock.advance(250.0)  # a sleep past the close moves it on, as it would a set time
    assert clock.now() == 250.0
    clock.advance(200.0)  # never back
    assert clock.now() == 250.0
    clock._now = None
    cell[0] = 11
    clock.settle()
    cell[0] = 8  # no longer read
    assert clock.now() == 340
