"""Counting and logging the malformed frames a venue stream skips, without flooding the log.

The first frame of each kind (MalformedFrame.kind: what is wrong, without the offending value)
is logged in full: venue, channel, the symbols it concerns, the reason and a short excerpt of the
frame, escaped to one line. Later frames of a kind already seen are counted and summarized in one
line per kind at most every `SUMMARY_EVERY` seconds of trio's clock. Kinds past `MAX_KINDS`
share one summary, so a venue sending endlessly different garbage still costs a bounded log.

Venue market-data frames carry no credentials; the excerpt is cut to `EXCERPT` characters all
the same, and nothing else of the connection (URL, headers) is logged. No I/O besides logging.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from .errors import MalformedFrame

__all__ = ["MalformedLog", "excerpt"]

log = logging.getLogger("providers.net")

SUMMARY_EVERY = 60.0  # seconds between two summary lines of one kind
MAX_KINDS = 32  # kinds logged individually; the rest share one line
EXCERPT = 160  # characters of a frame shown
_OTHER = "other kinds"


def excerpt(frame: str | bytes, limit: int = EXCERPT) -> str:
    """Return the start of `frame` as one printable line (control characters escaped)."""
    text = frame[: limit * 4].decode("utf-8", "replace") if isinstance(frame, bytes) \
        else frame[: limit * 4]
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _Kind:
    count: int = 0  # frames of this kind so far
    unreported: int = 0  # since the last line about it
    logged_at: float = 0.0  # trio time of that line


@dataclass
class MalformedLog:
    """The malformed frames of one venue's stream: counts by kind, and their log lines."""

    venue: str
    total: int = 0
    kinds: dict[str, _Kind] = field(default_factory=dict)

    def record(self, exc: MalformedFrame, frame: str | bytes, names: list[str] | None) -> None:
        """Count one skipped frame; log it if it is the first of its kind or a summary is due."""
        self.total += 1
        key = exc.kind if exc.kind in self.kinds or len(self.kinds) < MAX_KINDS else _OTHER
        kind = self.kinds.setdefault(key, _Kind())
        kind.count += 1
        now = trio.current_time()
        channel = f" on channel {exc.channel}" if exc.channel else ""
        where = f" for {', '.join(names)}" if names else ""
        if kind.count == 1:
            kind.logged_at = now
            log.warning("%s: malformed frame%s%s: %s (skipped; %d so far): %s", self.venue,
                        channel, where, exc.reason, self.total, excerpt(frame))
            return
        kind.unreported += 1
        if now - kind.logged_at >= SUMMARY_EVERY:
            log.warning("%s: %d more malformed frames (%s) in the last %.0f s, %d of that kind "
                        "and %d in all so far; latest%s%s: %s", self.venue, kind.unreported,
                        key, now - kind.logged_at, kind.count, self.total, channel, where,
                        excerpt(frame))
            kind.unreported = 0
            kind.logged_at = now

    def flush(self) -> None:
        """Log the frames counted since their kind's last line (at the end of a connection)."""
        for key, kind in self.kinds.items():
            if kind.unreported:
                log.warning("%s: %d more malformed frames (%s), %d of that kind and %d in all "
                            "so far", self.venue, kind.unreported, key, kind.count, self.total)
                kind.unreported = 0
                kind.logged_at = trio.current_time()
