"""What every `engine` subcommand shares: the usage error and the parsing of common options."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["UsageError", "check_timeframe", "parse_options"]


class UsageError(Exception):
    """A command-line argument is wrong; the message says which and why."""


def parse_options(pairs: Sequence[str] | None, what: str = "-o") -> dict[str, str]:
    """Turn `key=value` strings into a dict, rejecting anything else with the offending text."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {pair!r}: expected name=value")
        out[key.strip()] = value.strip()
    return out


def check_timeframe(text: str | None) -> None:
    """Reject a bad `--timeframe` (None: not given) with the reason."""
    if not text:
        return
    from engine.sampler import parse_timeframe

    try:
        parse_timeframe(text)
    except ValueError as exc:
        raise UsageError(f"--timeframe: {exc}") from None
