"""Options of the venue providers: endpoints, timeouts, reconnect and rate-limit settings.

Values arrive as strings from `-o name=value` or as Python values from `configure(...)`; each is
validated here with a message naming the option. Endpoint defaults can also come from the
ENGINE_<VENUE>_REST_URL / _WS_URL environment variables. No I/O beyond reading the environment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Option", "common_options", "parse_options", "StreamSettings"]


@dataclass(frozen=True)
class Option:
    default: Any
    parse: Callable[[str, Any], Any]
    help: str
    env: str | None = None


def url(*schemes: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        text = str(value).strip()
        parts = urlsplit(text)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"option {name}: expected a {'/'.join(schemes)} URL, got {value!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"option {name}: bad port in {value!r}") from None
        return text.rstrip("/")
    return parse


def number(lo: float = 0.0, *, open_lo: bool = True, hi: float = math.inf
           ) -> Callable[[str, Any], float]:
    def parse(name: str, value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"option {name}: expected a number, got {value!r}")
        try:
            out = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(f"option {name}: expected a number, got {value!r}") from None
        if not math.isfinite(out) or out < lo or (open_lo and out == lo) or out > hi:
            bound = f"> {lo:g}" if open_lo else f">= {lo:g}"
            raise ValueError(f"option {name}: must be {bound}"
                             + (f" and <= {hi:g}" if math.isfinite(hi) else "")
                             + f", got {value!r}")
        return out
    return parse


def optional_int(name: str, value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name}: expected an integer or none, got {value!r}") from None


def choice(*values: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        text = str(value).strip()
        for v in values:
            if text.lower() == v.lower():
                return v
        raise ValueError(f"option {name}: expected one of {', '.join(values)}, got {value!r}")
    return parse


def common_options(venue: str, rest_url: str, ws_url: str, *, stale_after: float
                   ) -> dict[str, Option]:
    """The options every venue provider takes, with `venue`'s endpoints as defaults."""
    env = venue.upper()
    return {
        "rest_url": Option(rest_url, url("http", "https"), "REST base URL",
                           env=f"ENGINE_{env}_REST_URL"),
        "ws_url": Option(ws_url, url("ws", "wss"), "websocket base URL",
                         env=f"ENGINE_{env}_WS_URL"),
        "stale_after": Option(stale_after, number(), "seconds without any websocket message "
                              "before the stream counts as stale and is reconnected"),
        "connect_timeout": Option(10.0, number(), "seconds to open a websocket"),
        "close_timeout": Option(2.0, number(), "seconds to wait for a websocket close handshake"),
        "request_timeout": Option(10.0, number(), "seconds for one REST request"),
        "reconnect_min": Option(1.0, number(), "first reconnect delay, seconds (then doubling, "
                                "jittered)"),
        "reconnect_max": Option(60.0, number(), "longest reconnect delay, seconds"),
        "max_gap": Option(3600.0, number(), "longest outage, seconds, whose missed trades are "
                          "replayed after a reconnect"),
        "max_retry_wait": Option(300.0, number(), "longest Retry-After / ban, seconds, to wait "
                                 "out; a longer one fails the request"),
        "jitter_seed": Option(None, optional_int, "seed for the reconnect jitter (tests)"),
        "close_delay": Option(0.5, number(open_lo=False), "seconds past a bar's end the engine "
                              "waits before closing it, for trades still on the wire"),
    }


def parse_options(venue: str, spec: dict[str, Option], options: dict[str, Any]
                  ) -> dict[str, Any]:
    """Return every option's value: its default, then the environment, then `options`."""
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise ValueError(f"{venue} has no option {', '.join(unknown)}; options are "
                         f"{', '.join(spec)}")
    values: dict[str, Any] = {}
    for name, opt in spec.items():
        raw = os.environ.get(opt.env) if opt.env else None
        if name in options:
            values[name] = opt.parse(name, options[name])
        elif raw is not None and raw.strip():
            try:
                values[name] = opt.parse(name, raw)
            except ValueError as exc:
                raise ValueError(f"environment variable {opt.env}: {exc}") from None
        else:
            values[name] = opt.default
    if "reconnect_min" in values and values["reconnect_max"] < values["reconnect_min"]:
        raise ValueError(f"option reconnect_max ({values['reconnect_max']:g}) must be >= "
                         f"reconnect_min ({values['reconnect_min']:g})")
    return values


@dataclass(frozen=True)
class StreamSettings:
    """What the resilient stream needs from the options (seconds throughout)."""

    ws_url: str
    stale_after: float
    connect_timeout: float
    close_timeout: float
    reconnect_min: float
    reconnect_max: float
    max_gap: float
    jitter_seed: int | None

    @classmethod
    def from_options(cls, values: dict[str, Any], ws_url: str) -> StreamSettings:
        return cls(ws_url=ws_url, stale_after=values["stale_after"],
                   connect_timeout=values["connect_timeout"],
                   close_timeout=values["close_timeout"],
                   reconnect_min=values["reconnect_min"], reconnect_max=values["reconnect_max"],
                   max_gap=values["max_gap"], jitter_seed=values["jitter_seed"])
