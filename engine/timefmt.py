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
    """`iso` of every element of `times` (epoch seconds), computed for the whole array at once:
    the same strings, a fraction of the cost for long series."""
    t = np.asarray(times, dtype=np.float64).ravel()
    missing = np.isnan(t)
    t = np.where(missing, 0.0, t)
    # As datetime.fromtimestamp: whole seconds, then microseconds rounded half to even.
    sec = np.floor(t)
    us = np.round((t - sec) * 1e6)
    stamp = (sec.astype(np.int64) * 1_000_000 + us.astype(np.int64)).astype("datetime64[us]")
    out = np.datetime_as_string(stamp, unit="s").astype(object) + "Z"
    fine = (stamp.astype(np.int64) % 1_000_000) >= 1000
    if fine.any():
        out[fine] = np.datetime_as_string(stamp[fine], unit="ms").astype(object) + "Z"
    if is_daily(period):
        dates = t % _DAY == 0
        if dates.any():
            out[dates] = np.datetime_as_string(stamp[dates], unit="D").astype(object)
    out[missing] = None
    return out.tolist()
