"""The indicator list people read (README, `engine indicators`) is the code's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import engine
from engine.kernels import KINDS

ROOT = Path(__file__).resolve().parents[2]


def test_every_indicator_is_listed_with_its_parameters():
    items = {i.kind: i for i in engine.list_indicators()}
    assert list(items) == list(KINDS)
    assert items["macd"].params == ("fast=12", "slow=26", "signal=9")
    assert items["macd"].outputs == ("line", "signal", "hist")
    assert items["sma"].params == ("period", "exact=False")
    readme = (ROOT / "README.md").read_text()
    for i in items.values():
        assert f"| `{i.signature()}` |" in readme, i.kind


def test_the_cli_prints_the_same_list():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "indicators", "--json"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    listed = json.loads(out.stdout)
    assert [x["kind"] for x in listed] == list(KINDS)
    assert listed[3]["params"] == ["period=14"]  # rsi
