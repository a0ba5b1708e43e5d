"""The plausibility bounds every provider applies (engine.plausible): prices, sizes, times
and bars, checked against values written out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from engine.dtypes import ohlc_dtype
from engine.plausible import (
    first_bad_bar,
    price_problem,
    size_problem,
    time_ceiling,
    time_problem,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC).timestamp()
END_OF_NEXT_YEAR = datetime(2028, 1, 1, tzinfo=UTC).timestamp()


def test_times_run_from_1970_to_the_end_of_next_year():
    assert time_ceiling(NOW) == END_OF_NEXT_YEAR
    assert time_ceiling(datetime(2027, 1, 1, tzinfo=UTC).timestamp()) == \
        datetime(2029, 1, 1, tzinfo=UTC).timestamp()
    assert time_problem(0.0, NOW) is None
    assert time_problem(END_OF_NEXT_YEAR - 1, NOW) is None
    assert time_problem(END_OF_NEXT_YEAR, NOW) == \
        "is 2028-01-01T00:00:00Z, not between 1970 and the end of 2027"
    assert time_problem(-1.0, NOW) == \
        "is 1969-12-31T23:59:59Z, not between 1970 and the end of 2027"
    assert time_problem(math.nan, NOW) == "is not a finite time"
    assert time_problem(1e300, NOW) == "is 1e+300 s after 1970, not between 1970 and the end of 2027"


@pytest.mark.parametrize(("value", "problem"), [
    (61837.63, None), (1e-8, None), (999_999_999_999.0, None),
    (0.0, "is not a positive price"), (-1.0, "is not a positive price"),
    (1e12, "is not a plausible price (at or above 1e+12)"), (1e308, "is not a plausible price"
                                                                    " (at or above 1e+12)"),
    (math.nan, "is not a finite number"), (math.inf, "is not a finite number"),
])
def test_prices_are_finite_positive_and_below_1e12(value, problem):
    assert price_problem(value) == problem


@pytest.mark.parametrize(("value", "problem"), [
    (0.0, None), (1e14, None), (-0.5, "is negative"), (math.nan, "is not a finite number"),
    (1e18, "is not a plausible size (at or above 1e+18)"),
])
def test_sizes_are_finite_and_not_negative(value, problem):
    assert size_problem(value) == problem


def _bars(*rows: tuple) -> np.ndarray:
    out = np.zeros(len(rows), dtype=ohlc_dtype)
    for i, (t, o, h, low, c, v) in enumerate(rows):
        out[i] = (0, t, o, h, low, c, v, 0, c)
    return out


@pytest.mark.parametrize(("row", "found"), [
    ((60, 10, 11, 9, 10.5, 1), None),
    ((60, 10, 10, 10, 10, 0), None),  # a bar with one price and no volume
    ((60, 10, 11, 12, 10.5, 1), ("high", "is below low 12")),
    ((60, 8, 11, 9, 10.5, 1), ("open", "is outside low..high 9..11")),
    ((60, 10, 11, 9, 11.5, 1), ("close", "is outside low..high 9..11")),
    ((60, 10, 11, 9, 10.5, -1), ("volume", "is negative")),
    ((60, 10, 11, 9, 10.5, math.nan), ("volume", "is not a finite number")),
    ((60, -10, -9, -11, -10, 1), ("open", "is not a positive price")),
    ((60, 10, 1e308, 9, 10.5, 1), ("high", "is not a plausible price (at or above 1e+12)")),
    ((99_999_999_999, 1, 1, 1, 1, 1), ("time", "is 5138-11-16T09:46:39Z, not between 1970 "
                                               "and the end of 2027")),
])
def test_a_bar_names_its_first_implausible_field(row, found):
    bars = _bars((0, 1, 1, 1, 1, 1), row)
    assert first_bad_bar(bars, NOW) == (None if found is None else (1, *found))
