"""What a sweep's workers share, with no actor machinery: loading the evaluation function by
name, cleaning its metrics, the pool's default size and the sweep's error. Both the tractor pool
(`engine.actors.pool`, used by sweep hosts) and the plain local workers
(`engine.actors.sweep_worker`) use these, so a local sweep never imports tractor.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.actors.messages import plain
from engine.file_modules import module_from_file

__all__ = ["SweepError", "default_workers", "load_evaluate", "clean_metrics", "make_jobs",
           "DEFAULT_EVALUATE"]

DEFAULT_EVALUATE = "engine.backtests.replay:evaluate_params"


class SweepError(RuntimeError):
    """The sweep cannot run: the evaluation function does not load, no worker is left, ..."""


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_loaded: dict[str, Callable[..., Any]] = {}


def load_evaluate(spec: str) -> Callable[..., Any]:
    """Import an evaluation function named `package.module:function` or `path/file.py:function`
    (cached per process)."""
    if spec in _loaded:
        return _loaded[spec]
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise SweepError(f"evaluate {spec!r}: expected module:function or path/file.py:function")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise SweepError(f"evaluate {spec!r}: no file {module_name}")
        module = module_from_file(f"_engine_evaluate_{path.stem}", path)
        if module is None:
            raise SweepError(f"evaluate {spec!r}: cannot import {module_name}")
    else:
        module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SweepError(f"evaluate {spec!r}: {module_name} has no function {attr!r}")
    _loaded[spec] = fn
    return fn


def make_jobs(grid: Sequence[dict], job_options: Sequence[dict] | None = None) -> list[dict]:
    """A sweep's jobs in grid order: id, params and, where given, the job's own options."""
    jobs = [{"id": i, "params": dict(p)} for i, p in enumerate(grid)]
    if job_options is not None:
        if len(job_options) != len(jobs):
            raise SweepError(f"{len(job_options)} job options for {len(jobs)} combinations")
        for job, extra in zip(jobs, job_options, strict=True):
            if extra:
                job["options"] = dict(extra)
    return jobs


def clean_metrics(metrics: Any) -> dict[str, Any]:
    """An evaluation's metrics as plain builtins, NaN and infinities as None (a sweep's
    metrics are finite numbers or None wherever they were computed)."""
    out = plain(dict(metrics))
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in out.items()}
