"""Start-up does no work it does not need: importing the package, building the command line and
running a CSV backtest leave the heavy libraries a run does not use unimported, and a local
sweep's worker never imports the actor machinery. (Behaviour, checked in fresh interpreters;
the time it saves is `benchmarks/startup.py`'s to measure.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "providers" / "csvfile" / "samples" / "demo_daily.csv"
HEAVY = ("pandas", "bokeh", "tractor", "trio", "numba", "pyarrow", "pydantic", "msgspec",
         "pyarrow.parquet", "multiprocessing.resource_tracker")


def imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("code", [
    "import engine",
    "import engine.cli; engine.cli.build_parser()",
    "from engine import kernels",
])
def test_importing_the_package_and_the_command_line_loads_no_heavy_library(code):
    assert imported_after(code) & set(HEAVY) == set()


def test_a_csv_backtest_loads_neither_pandas_nor_bokeh_nor_actors_nor_parquet():
    code = ("import contextlib, io\nfrom engine.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['backtest', {str(ROOT / 'strategies' / 'sma_cross.py')!r}, "
            f"'--data', {str(DATA)!r}]) == 0")
    loaded = imported_after(code)
    assert "numba" in loaded  # it did run (the clearing core is jitted)
    assert loaded & {"pandas", "bokeh", "tractor", "pyarrow.parquet"} == set()


def test_a_local_sweep_and_its_workers_do_not_import_the_actor_machinery():
    loaded = imported_after("import engine.actors.sweep_local, engine.actors.sweep_worker, "
                            "engine.actors.sweep_progress, engine.backtests.optimize")
    assert "tractor" not in loaded
