"""Importing a user's `.py` file (a strategy, a provider, a sweep's evaluation function) as a
module of its own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["module_from_file"]


def module_from_file(name: str, path: str | Path) -> ModuleType | None:
    """Import the file at `path` as module `name`, registered in `sys.modules` as an import
    would (its classes pickle, its dataclasses resolve their annotations); None when Python
    cannot import such a file. An error inside the file propagates and leaves no half-made
    module behind."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
