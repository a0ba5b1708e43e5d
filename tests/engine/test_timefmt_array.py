"""`iso_array` (the whole array at once) gives exactly `iso` of each element."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.timefmt import iso, iso_array

seconds = st.one_of(
    st.floats(-2e9, 4e9, allow_nan=False),
    st.integers(-2_000_000_000, 4_000_000_000).map(float),
    st.integers(-20_000, 40_000).map(lambda d: d * 86400.0),
    st.tuples(st.integers(0, 2_000_000_000), st.integers(0, 999)).map(lambda p: p[0] + p[1] / 1e3),
    st.just(float("nan")),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(seconds, min_size=0, max_size=30),
       st.sampled_from([None, 1, 60, 3600, 86400, 7 * 86400, 3600.5]))
def test_iso_array_is_iso_of_each_element(times, period):
    assert iso_array(np.array(times, dtype=np.float64), period) == [iso(t, period) for t in times]


def test_examples():
    t = np.array([1_223_856_000, 1_223_856_000 + 52_200, 1_223_856_000.25, np.nan])
    assert iso_array(t, 86400) == ["2008-10-13", "2008-10-13T14:30:00Z",
                                   "2008-10-13T00:00:00.250Z", None]
    assert iso_array(t[:1]) == ["2008-10-13T00:00:00Z"]
