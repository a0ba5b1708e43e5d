"""Logging in child actors: the same two streams as `engine run` (engine lines on stderr,
strategy lines plainly on stdout), so a strategy prints the same in an actor as in process.

Child actors inherit the terminal (or pipes) of the root; nothing here opens files.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_child_logging"]

_configured = False


def configure_child_logging(level: str = "info") -> None:
    """Configure logging once per process (a second call does nothing)."""
    global _configured
    if _configured:
        return
    _configured = True
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    strat = logging.getLogger("strategy")
    if not strat.handlers:
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(logging.Formatter("%(name)s %(message)s"))
        strat.addHandler(out)
    strat.propagate = False
