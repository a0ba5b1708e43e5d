"""Strategy files and parameters: clear errors naming the file, line or parameter."""

from __future__ import annotations

import sys
import textwrap
from typing import Annotated

import pytest
from pydantic import Field

from engine import Strategy, StrategyError, load_strategy


def write(tmp_path, body: str, name: str = "strat.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


class Params(Strategy):
    fast: int = 10
    ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5
    mode: str = "long"


def test_parameters_are_typed_validated_and_overridable_from_strings():
    s = Params(fast="5", ratio="0.25")
    assert (s.fast, s.ratio, s.mode) == (5, 0.25, "long")
    assert Params.param_names() == ["fast", "ratio", "mode"]


@pytest.mark.parametrize(("params", "message"), [
    ({"fast": "abc"}, "Params parameter 'fast': Input should be a valid integer"),
    ({"ratio": "1.5"}, "Params parameter 'ratio': Input should be less than 1"),
    ({"slow": "3"}, "Params has no parameter 'slow' (parameters: fast, ratio, mode)"),
])
def test_a_bad_parameter_is_named(params, message):
    with pytest.raises(StrategyError) as info:
        Params(**params)
    assert message in str(info.value)


def test_loading_a_strategy_file(tmp_path):
    path = write(tmp_path, """
        from engine import Strategy

        class Mine(Strategy):
            symbols = ("btcusd",)
            n: int = 3
    """)
    cls = load_strategy(path)
    assert cls.__name__ == "Mine"
    assert cls(n="4").n == 4


@pytest.mark.parametrize(("body", "message"), [
    ("from engine import Strategy\nclass A(Strategy:\n    pass\n", "strat.py:2: syntax error"),
    ("from engine import Strategy\n\nx = 1 / 0\n", "strat.py:3: import failed: ZeroDivisionError"),
    ("import no_such_module_zz\n", "strat.py:1: import failed: ModuleNotFoundError"),
    ("x = 1\n", "defines no Strategy subclass"),
    ("from engine import Strategy\nclass A(Strategy): pass\nclass B(Strategy): pass\n",
     "defines several strategies (A, B)"),
])
def test_a_broken_strategy_file_is_named_with_its_line(tmp_path, body, message):
    path = write(tmp_path, body)
    with pytest.raises(StrategyError) as info:
        load_strategy(path)
    assert message in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(StrategyError, match="does not exist"):
        load_strategy(tmp_path / "nope.py")


def test_a_file_that_fails_to_import_leaves_no_half_made_module(tmp_path):
    # A strategy, provider or sweep evaluation file that raises while it imports: the next
    # attempt (the file fixed) must import it afresh, not find a broken module.
    from engine.actors.sweep_jobs import SweepError, load_evaluate
    from engine.provider import ProviderError, load_provider

    path = tmp_path / "broken.py"
    path.write_text("x = 1 / 0\n")
    with pytest.raises(StrategyError):
        load_strategy(path)
    with pytest.raises(ProviderError):
        load_provider(str(path))
    with pytest.raises((SweepError, ZeroDivisionError)):
        load_evaluate(f"{path}:evaluate")
    assert not [m for m in sys.modules if m.endswith("_broken")]
