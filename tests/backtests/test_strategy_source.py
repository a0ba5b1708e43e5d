"""A strategy class written out for a sweep's workers: what its source names is carried over
(constants, helpers, imports), a class from an importable module is loaded from its own file,
and a name that cannot be carried is refused by name before any worker starts."""

from __future__ import annotations

import types

import numpy as np
import pytest

from engine.backtests.optimize import optimize
from engine.backtests.replay import BacktestError
from engine.backtests.strategy_source import strategy_file
from engine.strategy import load_strategy

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _module(tmp_path, text: str) -> types.ModuleType:
    """Run `text` as a script's main module would (a module with no importable name)."""
    path = tmp_path / "notebook_like.py"
    path.write_text(text)
    module = types.ModuleType("__main__")
    module.__file__ = str(path)
    exec(compile(text, str(path), "exec"), module.__dict__)  # noqa: S102 - the test's own text
    return module


SCRIPT = '''
import math
import numpy as np
from engine import Strategy
WINDOW = 3
table = np.arange(4)

def scaled(x):
    return x * WINDOW

class Mine(Strategy):
    symbols = ("x",)
    n: int = 2
    def on_bar(self, symbol):
        table = self.ctx.ohlcv(symbol)  # a local of the same name as the script's array
        return scaled(math.floor(len(table)))
'''


def test_the_source_carries_what_the_class_names_and_loads_alone(tmp_path):
    module = _module(tmp_path, SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    path = strategy_file(module.Mine, out)
    assert path == out / "Mine.py"
    text = path.read_text()
    assert "WINDOW = 3" in text
    assert "def scaled(x):" in text
    assert "import math" in text
    assert "table =" not in text.split("class Mine")[0]  # the local is not the script's array
    cls = load_strategy(path)
    assert cls.__name__ == "Mine"
    assert cls.param_names() == ["n"]


def test_an_importable_class_is_loaded_from_its_own_file(tmp_path):
    cls = load_strategy(ROOT / "strategies" / "sma_cross.py")
    assert strategy_file(cls, tmp_path) == ROOT / "strategies" / "sma_cross.py"
    assert list(tmp_path.iterdir()) == []  # its own file, not a copy


def test_a_name_made_at_run_time_is_refused_by_name(tmp_path):
    module = _module(tmp_path, SCRIPT.replace("return scaled", "return table.sum() + scaled")
                     .replace("table = self.ctx.ohlcv(symbol)  # a local of the same name "
                              "as the script's array", "pass"))
    data = {"x": np.zeros(3, dtype=[("time", "i8"), ("open", "f8"), ("high", "f8"),
                                     ("low", "f8"), ("close", "f8"), ("volume", "f8")])}
    with pytest.raises(BacktestError, match="strategy Mine: the strategy uses 'table', a "
                                            "ndarray made at run time"):
        optimize(module.Mine, data, {"n": [1, 2]}, workers=1)
