"""Times as people read them: ISO 8601 in UTC, dates for daily periods.

Everything inside the engine keeps time as epoch seconds (UTC); this module is the one place
that turns them into text for tables, reports, logs and the `*_iso` fields of JSON results.
It never parses or reads the clock.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

__all__ = ["iso", "iso_array", "is_daily"]

_DAY = 86400


def is_daily(period: float | None) -> bool:
    """Whether bars of `period` seconds are named by their date (a day or a multiple of it)."""
    return bool(period) and period >= _DAY and period % _DAY == 0


def iso(t: float | None, period: float | None = None) -> str | None:
    """`t` (epoch seconds, UTC) as ISO 8601: `2008-10-13` when `period` is daily and `t` is a
    midnight, else `2008-10-13T14:30:00Z` (milliseconds shown only when present). None and NaN
    give None."""
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return None
    t = float(t)
    if is_daily(period) and t % _DAY == 0:
        return dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat()
    when = dt.datetime.fromtimestamp(t, dt.UTC)
    spec = "milliseconds" if when.microsecond >= 1000 else "seconds"
    return when.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def iso_array(times: np.ndarray, period: float | None = None) -> list[str | None]:
    """`iso` of every element of `times` (epoch seconds)."""
    return [iso(t, period) for t in np.asarray(times, dtype=np.float64).tolist()]
