"""Fixtures shared by the whole suite: the shared-memory leak guard and the real-data locator."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHM_DIR = Path("/dev/shm")


def shm_names() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith("engine_")}


@pytest.fixture(autouse=True)
def no_shm_leak():
    """Every test must leave /dev/shm as it found it."""
    before = shm_names()
    yield
    import gc

    gc.collect()
    leaked = shm_names() - before
    assert not leaked, f"test left shared-memory segments behind: {sorted(leaked)}"


def shared_data_dir() -> Path | None:
    """The project's real market data (../shared/data), or None when it is absent."""
    env = os.environ.get("ENGINE_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path
