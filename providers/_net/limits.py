"""Client-side rate limiting for venue REST APIs: request pacing, weight budgets and the waits a
venue orders with 429 / 418 and Retry-After.

One `RateLimiter` serves every request a provider makes to one venue in a trio run, so a backfill
and a gap fill share the budget. Time is trio's clock (virtual under a MockClock), never the wall
clock. Nothing here opens a socket.
"""

from __future__ import annotations

import logging
import math

import trio

from .errors import RateLimited

__all__ = ["RateLimiter", "RetryAfter"]

log = logging.getLogger("providers.net")

# Binance: "IP bans are tracked and scale in duration for repeat offenders, from 2 minutes to
# 3 days"; a 418 without Retry-After waits at least the shortest ban.
BAN_FALLBACK = 120.0


class RetryAfter(Exception):
    """Raised by a venue's payload check: the venue said "too many requests" in its body."""

    def __init__(self, seconds: float | None, reason: str) -> None:
        self.seconds = seconds
        self.reason = reason
        super().__init__(reason)


class RateLimiter:
    """Pace and budget one venue's REST requests; block them all while the venue says wait.

    - `rate` / `burst`: a token bucket, requests per second with bursts of `burst`
      (Kraken's public endpoints are limited per IP to about one call a second).
    - `weight_limit` / `weight_header`: a per-minute request-weight budget the venue reports in a
      response header (Binance: X-MBX-USED-WEIGHT-1M against REQUEST_WEIGHT 6000 a minute);
      requests wait for the next minute rather than pass `budget` of it.
    - 429 and 418 answers (and `RetryAfter` from a payload check) block every request until the
      venue's Retry-After has passed; a wait longer than `max_wait` seconds raises RateLimited.
    """

    def __init__(self, venue: str, *, rate: float | None = None, burst: int = 1,
                 weight_limit: int | None = None, weight_header: str | None = None,
                 budget: float = 0.9, max_wait: float = 300.0) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"{venue}: request rate must be positive, got {rate}")
        self.venue = venue
        self.rate = rate
        self.burst = max(1, burst)
        self.weight_limit = weight_limit
        self.weight_header = weight_header.lower() if weight_header else None
        self.budget = budget
        self.max_wait = max_wait
        self.used_weight = 0
        self.strikes = 0  # consecutive rate-limit answers, for the fallback backoff
        self._run: object | None = None
        self._reset_clock()

    def _reset_clock(self) -> None:
        self._tokens = float(self.burst)
        self._refilled: float | None = None
        self._window_start: float | None = None
        self._blocked_until = -math.inf
        self._lock = trio.Lock()

    def _check_run(self) -> None:
        # trio times (and locks) are per run: a limiter carried into a new trio.run starts its
        # clock afresh.
        root = trio.lowlevel.current_root_task()
        if root is not self._run:
            self._run = root
            self._reset_clock()

    def set_weight_limit(self, limit: int) -> None:
        """Use the venue's own published per-minute weight limit (from its exchange info)."""
        if limit > 0:
            self.weight_limit = limit

    async def acquire(self, weight: int = 1) -> None:
        """Wait until a request of `weight` may be sent."""
        self._check_run()
        async with self._lock:  # one request at a time through the budget
            while True:
                # Deadlines, not durations: sleep_until returns with the clock at or past
                # them, so float rounding cannot leave a sliver to wait forever.
                if trio.current_time() < self._blocked_until:
                    await trio.sleep_until(self._blocked_until)
                    continue
                until = self._weight_wait(weight)
                if until is None:
                    break
                await trio.sleep_until(until)
            if self.rate is not None:
                now = trio.current_time()
                if self._refilled is not None:
                    self._tokens = min(float(self.burst),
                                       self._tokens + (now - self._refilled) * self.rate)
                self._refilled = now
                if self._tokens < 1.0:
                    await trio.sleep_until(now + (1.0 - self._tokens) / self.rate)
                    self._tokens, self._refilled = 1.0, trio.current_time()
                self._tokens -= 1.0
            self.used_weight += weight

    def _weight_wait(self, weight: int) -> float | None:
        """The time to wait until before spending `weight`, or None to go now."""
        if not self.weight_limit or self._window_start is None:
            return None
        if self.used_weight + weight <= self.weight_limit * self.budget:
            return None
        now = trio.current_time()
        until = self._window_start + 60.0
        if until <= now:
            # The minute is over: the venue's counter has reset.
            self.used_weight = 0
            self._window_start = now
            return None
        log.info("%s: %d of %d request weight used this minute; waiting %.1f s",
                 self.venue, self.used_weight, self.weight_limit, until - now)
        return until

    def observe(self, status: int, headers: dict[str, str]) -> float | None:
        """Account for a response; return how long to wait before retrying a rate-limited one
        (seconds), or None when the response is not a rate-limit answer."""
        self._check_run()
        now = trio.current_time()
        if self.weight_header and self.weight_header in headers:
            try:
                used = int(headers[self.weight_header])
            except ValueError:
                used = None
            if used is not None:
                if self._window_start is None or used < self.used_weight:
                    # First sight, or the venue's counter dropped: a new minute began.
                    self._window_start = now
                self.used_weight = used
        if status not in (418, 429):
            return None
        retry_after = _retry_after(headers.get("retry-after"))
        what = "banned this IP (HTTP 418)" if status == 418 else "rate-limited us (HTTP 429)"
        return self.block(retry_after, what, ban=status == 418)

    def succeeded(self) -> None:
        """A request went through: the next rate-limit answer backs off from the start."""
        self.strikes = 0

    def block(self, seconds: float | None, reason: str, *, ban: bool = False) -> float:
        """Block every request for `seconds` (or a backoff when the venue gave no time);
        raise RateLimited when that is longer than `max_wait`."""
        self._check_run()
        self.strikes += 1
        if seconds is None:
            seconds = max(BAN_FALLBACK, 60.0 * 2 ** (self.strikes - 1)) if ban else \
                min(60.0, 2.0 ** self.strikes)
        if seconds > self.max_wait:
            raise RateLimited(f"{self.venue} {reason} and asks to wait {seconds:.0f} s, longer "
                              f"than max_retry_wait={self.max_wait:g} s")
        self._blocked_until = max(self._blocked_until, trio.current_time() + seconds)
        log.warning("%s %s; waiting %.1f s before the next request", self.venue, reason, seconds)
        return seconds


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        # An HTTP-date would need the wall clock; neither venue sends one. Back off instead.
        return None
