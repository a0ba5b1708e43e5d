"""The provider's options and how a symbol names a file.

A symbol is a file path (absolute, or relative to the current directory and then to `data_dir`)
or a bare name looked up as `<data_dir>/<name>.csv`, `.csv.gz` or `.parquet`, in any case. This
module only stats and lists directories; it never parses a file.
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass
from pathlib import Path

from engine.datafiles import check_timezone

__all__ = ["Options", "SymbolNotFoundError", "parse_options", "resolve", "search", "SUFFIXES"]

SUFFIXES = (".csv", ".csv.gz", ".parquet")
ENV_DATA_DIR = "ENGINE_CSV_DIR"


class SymbolNotFoundError(FileNotFoundError):
    """No file matches a requested symbol; the message names the symbol and the paths tried."""


@dataclass(frozen=True)
class Options:
    data_dir: Path | None = None  # None: $ENGINE_CSV_DIR, else the current directory
    speed: float = 1.0  # replay speed multiplier; math.inf replays as fast as possible
    timezone: str = "UTC"  # zone of naive times in the files

    @property
    def directory(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        return Path(os.environ.get(ENV_DATA_DIR) or ".")


def _parse_speed(value: object) -> float:
    if isinstance(value, str) and value.strip().lower() in ("max", "inf", "0"):
        return math.inf
    try:
        speed = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"speed {value!r} is not a number or 'max'") from None
    if speed == 0 or speed == math.inf:
        return math.inf
    if not speed > 0:  # also NaN
        raise ValueError(
            f"speed must be positive (or 0/'max' for as fast as possible), got {value!r}"
        )
    return speed


def parse_options(current: Options, **options: object) -> Options:
    """Return `current` updated with `options` (strings or native values); None means default."""
    known = ("data_dir", "speed", "timezone")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    data_dir, speed, tz = current.data_dir, current.speed, current.timezone
    if "data_dir" in options:
        value = options["data_dir"]
        if value is None or value == "":
            data_dir = None
        else:
            data_dir = Path(os.fspath(value)).expanduser()  # type: ignore[arg-type]
            if not data_dir.is_dir():
                raise ValueError(f"data_dir {str(value)!r} is not a directory")
    if "speed" in options:
        speed = 1.0 if options["speed"] is None else _parse_speed(options["speed"])
    if "timezone" in options:
        value = options["timezone"]
        if value is not None and not isinstance(value, str):
            raise ValueError(f"timezone must be a zone name, got {value!r}")
        tz = "UTC" if value is None else check_timezone(value)
    return Options(data_dir=data_dir, speed=speed, timezone=tz)


def _listing(directory: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(directory) if e.is_file())
    except OSError:
        return []


def _in_dir(directory: Path, filename: str, names: list[str] | None = None) -> Path | None:
    exact = directory / filename
    if exact.is_file():
        return exact
    lower = filename.lower()
    for name in names if names is not None else _listing(directory):
        if name.lower() == lower:
            return directory / name
    return None


def _is_path(symbol: str) -> bool:
    return (
        "/" in symbol
        or os.sep in symbol
        or symbol.startswith("~")
        or symbol.lower().endswith((*SUFFIXES, ".gz", ".pq"))
    )


# Synthetic example files shipped with the provider, found after data_dir, so that a new user
# (and `engine check-provider providers.csvfile`) has something to read.
SAMPLES = Path(__file__).resolve().parent / "samples"


def resolve(symbol: str, options: Options) -> Path:
    """Return the file `symbol` names; raise SymbolNotFoundError listing the paths tried."""
    try:
        return _resolve_in(symbol, options.directory)
    except SymbolNotFoundError as exc:
        if _is_path(symbol) or not SAMPLES.is_dir():
            raise
        try:
            return _resolve_in(symbol, SAMPLES)
        except SymbolNotFoundError:
            raise exc from None


def _resolve_in(symbol: str, directory: Path) -> Path:
    tried: list[str] = []
    if not symbol.strip():
        raise SymbolNotFoundError(f"unknown symbol {symbol!r}: the symbol is empty")
    if _is_path(symbol):
        path = Path(symbol).expanduser()
        if path.is_file():
            return path
        tried.append(str(path))
        if not path.is_absolute():
            found = _in_dir(directory / path.parent, path.name)
            if found is not None:
                return found
            tried.append(str(directory / path))
    else:
        names = _listing(directory)
        for suffix in SUFFIXES:
            found = _in_dir(directory, symbol + suffix, names)
            if found is not None:
                return found
            tried.append(str(directory / (symbol + suffix)))
    note = "" if directory.is_dir() else f" (data_dir {str(directory)!r} does not exist)"
    raise SymbolNotFoundError(
        f"unknown symbol {symbol!r}: no file at {', '.join(dict.fromkeys(tried))} (any case){note}"
    )


def search(pattern: str, options: Options) -> list[str]:
    """Names of the files in data_dir, then the shipped samples, matching `pattern` (a substring
    or glob, any case)."""
    pattern = pattern.strip().lower()
    is_glob = any(ch in pattern for ch in "*?[")
    found: list[str] = []
    seen: set[str] = set()
    for directory in (options.directory, SAMPLES):
        group: dict[str, str] = {}
        for name in _listing(directory):
            for suffix in SUFFIXES:
                if name.lower().endswith(suffix):
                    stem = name[: -len(suffix)]
                    break
            else:
                continue
            key = stem.lower()
            hit = fnmatch.fnmatchcase(key, pattern) if is_glob else pattern in key
            if hit and key not in seen:
                group[key] = stem
        seen.update(group)
        found.extend(sorted(group.values(), key=str.lower))
    return found
