"""Find a provider module by path, check its surface against the spec, and hand back a handle.

The engine never imports a provider by name except the embedded default (`providers.sim`); every
other one arrives here as a module path, a short name under `providers/`, or a `.py` file.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engine.dtypes import OHLC_FIELDS, ohlc_dtype
from engine.file_modules import module_from_file

DEFAULT_PROVIDER = "providers.sim"

__all__ = ["Provider", "ProviderError", "ProviderFailure", "load_provider", "surface_problems",
           "DEFAULT_PROVIDER"]


class ProviderError(RuntimeError):
    """A provider could not be found, imported or does not expose the spec's surface."""


class ProviderFailure(RuntimeError):
    """A provider failed while running (a venue unreachable, keys unusable): not the user's
    input, but reported the same way, in one line; providers raise their own subclasses."""


_STREAM_PARAMS = ("send_chan", "symbols", "shm", "feed_is_live")
_BACKFILL_PARAMS = ("sym", "shm")


def _params_problem(fn: Callable, required: tuple[str, ...], name: str) -> str | None:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return f"{name}: signature cannot be read"
    names = list(params)
    if names[: len(required)] != list(required):
        return f"{name}: parameters must start with {', '.join(required)}; found {', '.join(names)}"
    if "task_status" not in params:
        return f"{name}: has no 'task_status' parameter (it must call task_status.started)"
    return None


def surface_problems(module: ModuleType) -> list[str]:
    """List what the module lacks or gets wrong of the spec's module surface (empty if none)."""
    problems: list[str] = []
    dtype = getattr(module, "ohlc_dtype", None)
    if not isinstance(dtype, np.dtype):
        problems.append("ohlc_dtype: missing or not a numpy.dtype")
    elif dtype.names is None or tuple(dtype.names[: len(OHLC_FIELDS)]) != OHLC_FIELDS:
        problems.append(f"ohlc_dtype: fields must start with {', '.join(OHLC_FIELDS)}")
    else:
        for field in OHLC_FIELDS:
            if dtype.fields[field][0] != ohlc_dtype.fields[field][0]:
                problems.append(
                    f"ohlc_dtype: field {field!r} is {dtype.fields[field][0]}, "
                    f"the spec says {ohlc_dtype.fields[field][0]}"
                )
    for name, required in (("stream_quotes", _STREAM_PARAMS), ("backfill_bars", _BACKFILL_PARAMS)):
        fn = getattr(module, name, None)
        if fn is None:
            problems.append(f"{name}: missing")
        elif not inspect.iscoroutinefunction(fn):
            problems.append(f"{name}: must be an async function")
        else:
            problem = _params_problem(fn, required, name)
            if problem:
                problems.append(problem)
    for name in ("symbol_info", "search_symbols", "configure"):
        fn = getattr(module, name, None)
        if fn is not None and not callable(fn):
            problems.append(f"{name}: present but not callable")
    return problems


@dataclass(frozen=True)
class Provider:
    """A loaded provider module with the spec's surface resolved."""

    name: str
    module: ModuleType

    @property
    def ohlc_dtype(self) -> np.dtype:
        return self.module.ohlc_dtype

    @property
    def stream_quotes(self) -> Callable[..., Any]:
        return self.module.stream_quotes

    @property
    def backfill_bars(self) -> Callable[..., Any]:
        return self.module.backfill_bars

    def symbol_info(self, symbol: str) -> dict[str, Any]:
        fn = getattr(self.module, "symbol_info", None)
        return dict(fn(symbol)) if fn else {}

    def search_symbols(self, pattern: str) -> list[str]:
        fn = getattr(self.module, "search_symbols", None)
        return list(fn(pattern)) if fn else []

    def configure(self, **options: Any) -> None:
        """Pass options (strings from the CLI or values from Python) to the provider."""
        if not options:
            return
        fn = getattr(self.module, "configure", None)
        if fn is None:
            raise ProviderError(f"provider {self.name!r} takes no options (it has no configure())")
        try:
            fn(**options)
        except (TypeError, ValueError) as exc:
            raise ProviderError(f"provider {self.name!r}: bad option: {exc}") from None


def _import(spec: str) -> ModuleType:
    path = Path(spec)
    if spec.endswith(".py") or path.is_dir() and (path / "__init__.py").exists():
        if not path.exists():
            raise ProviderError(f"provider file {spec!r} does not exist")
        target = path / "__init__.py" if path.is_dir() else path
        module = module_from_file(f"_engine_provider_{path.stem}", target)
        if module is None:
            raise ProviderError(f"provider file {spec!r} cannot be imported")
        return module
    candidates = [spec] if "." in spec else [f"providers.{spec}", spec]
    for candidate in candidates:
        try:
            return importlib.import_module(candidate)
        except ModuleNotFoundError as exc:
            # Only "this module does not exist" moves on; a missing import inside it is real.
            if exc.name is None or not (
                candidate == exc.name or candidate.startswith(exc.name + ".")
            ):
                raise
    raise ProviderError(f"no provider module named {spec!r} (tried {', '.join(candidates)})")


def load_provider(spec: str = DEFAULT_PROVIDER, *, check: bool = True) -> Provider:
    """Import a provider by module path (`providers.sim`), short name (`sim`) or `.py` file."""
    try:
        module = _import(spec)
    except ProviderError:
        raise
    except Exception as exc:  # an import-time error inside the provider: name it, keep it short
        raise ProviderError(
            f"provider {spec!r} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    provider = Provider(name=spec, module=module)
    if check:
        problems = surface_problems(module)
        if problems:
            raise ProviderError(f"provider {spec!r} breaks the spec: " + "; ".join(problems))
    return provider
