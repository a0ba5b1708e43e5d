"""The public surface: every name `engine` exports resolves, and one import line is enough."""

from __future__ import annotations

import subprocess
import sys

import engine


def test_every_exported_name_resolves():
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name
    assert len(engine.__all__) == len(set(engine.__all__))


def test_attaching_to_shared_memory_does_not_import_the_runtime():
    code = ("import sys, engine.shm; "
            "print(sorted(m for m in ('trio', 'numba', 'engine.live') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
