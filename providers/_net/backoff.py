"""Jittered exponential backoff for reconnects and retries. Pure arithmetic: no clock, no I/O."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays (seconds) that double from `base` up to `cap`, each drawn in [d/2, d] ("equal
    jitter"): never zero, so a venue that is down is not hammered, and never in lock-step with
    other clients that lost the same connection. `rng` is injectable so tests are reproducible.
    """

    def __init__(self, base: float = 1.0, cap: float = 60.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if base <= 0 or cap < base or factor < 1:
            raise ValueError(f"backoff needs 0 < base <= cap and factor >= 1, got "
                             f"base={base}, cap={cap}, factor={factor}")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.rng = rng or random.Random()
        self.attempt = 0

    def ceiling(self) -> float:
        """Return the largest delay the next attempt may draw (seconds)."""
        return min(self.cap, self.base * self.factor ** min(self.attempt, 64))

    def next(self) -> float:
        """Return the delay before the next attempt (seconds) and count the attempt."""
        d = self.ceiling()
        self.attempt += 1
        return d / 2 + self.rng.random() * d / 2

    def reset(self) -> None:
        """Start again from `base` (after a connection proved healthy)."""
        self.attempt = 0
