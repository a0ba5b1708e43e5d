"""A strategy class defined in a notebook or a script, written out as a module a sweep's workers
load by path, so they never import the caller's `__main__`.

`strategy_file(cls, folder)` writes `folder/<ClassName>.py`: the imports and definitions the
class's source names (modules, names from importable modules, functions and classes defined
beside it, plain constants), then the class's own source. A class from a module file (a
strategy file included) is not written out: its file is used as it is. A name the source uses
that cannot be carried this way (an object built at run time in the notebook) is reported by
name. Nothing here runs the strategy.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import linecache
import sys
import textwrap
import types
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

__all__ = ["strategy_file", "StrategySourceError"]

_PLAIN = (int, float, str, bytes, bool, type(None), complex)


class StrategySourceError(ValueError):
    """The class cannot be written out as a module (its source or a name it uses)."""


def _used_names(tree: ast.AST) -> set[str]:
    """Names the code reads, less those it binds itself (arguments, assignments, nested
    definitions): a method's local `bars` is not the notebook's `bars`."""
    read, bound = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
    top = tree.body[0] if isinstance(tree, ast.Module) and tree.body else None
    if top is not None and hasattr(top, "name"):
        bound.discard(top.name)  # the definition itself is written out, not carried
    return read - bound


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, tuple | frozenset | list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


@functools.cache
def _on_path(top: str) -> bool:
    return top in sys.builtin_module_names or PathFinder.find_spec(top) is not None


def _importable(obj: Any) -> bool:
    """True when a worker can import `obj` by its module's name (not a module that was
    loaded from a file under a name of its own, as strategy files are)."""
    module = getattr(obj, "__module__", None)
    if not module or module == "__main__" or module.startswith("_engine_"):
        return False
    return _on_path(module.split(".")[0])


def _source(obj: Any) -> str:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as exc:
        text = _class_source(obj) if isinstance(obj, type) else None
        if text is None:
            raise StrategySourceError(f"no source for {getattr(obj, '__name__', obj)!r}: "
                                      f"{exc}") from None
        return text


def _functions(obj: Any) -> list[types.FunctionType]:
    if isinstance(obj, types.FunctionType):
        return [obj]
    found = []
    for attr in vars(obj).values() if isinstance(obj, type) else ():
        fn = getattr(attr, "__func__", attr)
        fn = getattr(fn, "py_func", fn)
        if isinstance(fn, types.FunctionType):
            found.append(fn)
    return found


def _scope(obj: Any) -> dict[str, Any]:
    """The globals `obj`'s code runs with: its functions' own (the notebook's or script's
    namespace even where `__main__` is another module), else its module's."""
    for fn in _functions(obj):
        return dict(fn.__globals__)
    module = sys.modules.get(getattr(obj, "__module__", ""))
    return dict(vars(module)) if module is not None else {}


def _class_source(cls: type) -> str | None:
    """A class's source found through its methods' code (a notebook cell keeps its text in
    linecache under the cell's name, which `inspect` finds for functions but not classes)."""
    for fn in _functions(cls):
        code = fn.__code__
        lines = linecache.getlines(code.co_filename)
        if not lines:
            continue
        try:
            tree = ast.parse("".join(lines))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.ClassDef) and node.name == cls.__name__
                    and node.lineno <= code.co_firstlineno <= (node.end_lineno or 0)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                return textwrap.dedent("".join(lines[first - 1:node.end_lineno]))
    return None


def _lines(name: str, value: Any, scope: dict[str, Any], seen: set[int], out: list[str]
           ) -> None:
    """Append the line(s) that define `name` as `value` (and what a definition needs)."""
    if isinstance(value, types.ModuleType):
        if _on_path(value.__name__.split(".")[0]) and value.__name__ != "__main__":
            out.append(f"import {value.__name__}" if value.__name__ == name
                       else f"import {value.__name__} as {name}")
            return
        path = getattr(value, "__file__", None)
        if value.__name__ == "__main__" or not path:
            raise StrategySourceError(f"the strategy uses the module {name!r}, which a worker "
                                      "cannot import")
        # A module loaded from a file under a name of its own: loaded the same way.
        out.append("import importlib.util as _engine_util")
        out.append(f"_engine_spec = _engine_util.spec_from_file_location({value.__name__!r}, "
                   f"{path!r})\n{name} = _engine_util.module_from_spec(_engine_spec)\n"
                   f"_engine_spec.loader.exec_module({name})")
        return
    if _plain(value):
        out.append(f"{name} = {value!r}")
        return
    target = getattr(value, "py_func", value)  # a numba dispatcher: its Python function
    qualname = getattr(target, "__qualname__", "")
    if _importable(target) and qualname and "." not in qualname:
        out.append(f"from {target.__module__} import {qualname}" if qualname == name
                   else f"from {target.__module__} import {qualname} as {name}")
        return
    if isinstance(target, type | types.FunctionType) and "." not in qualname:
        if id(target) not in seen:
            seen.add(id(target))
            text = _source(target)
            # What its source names, it finds in its own module (a base class from a file).
            _needs(ast.parse(text), _scope(target) or scope, seen, out)
            out.append(text)
        if target.__name__ != name:
            out.append(f"{name} = {target.__name__}")
        return
    raise StrategySourceError(f"the strategy uses {name!r}, a {type(value).__name__} made at "
                              "run time: define it in a module, or as a plain constant")


def _needs(tree: ast.AST, scope: dict[str, Any], seen: set[int], out: list[str]) -> None:
    """The definitions of every name `tree` reads from `scope` (others are builtins, locals
    or attribute names: nothing to carry)."""
    for name in sorted(_used_names(tree)):
        if name in scope and not (hasattr(builtins, name) and scope[name] is getattr(builtins,
                                                                                     name)):
            _lines(name, scope[name], scope, seen, out)


def strategy_file(cls: type, folder: Path) -> Path:
    """The file a sweep's workers load `cls` from: its own module file when that is
    importable, else `folder/<ClassName>.py` written from its source."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if cls.__module__ != "__main__" and path and Path(path).is_file():
        return Path(path)  # a module file (a strategy file included): loaded as it is
    text = _source(cls)
    scope = _scope(cls)
    out: list[str] = []
    seen = {id(cls)}
    _needs(ast.parse(text), scope, seen, out)
    body = "\n".join(dict.fromkeys(out))  # each line once, in first-use order
    target = folder / f"{cls.__name__}.py"
    target.write_text(f'"""{cls.__name__}, written out for a sweep\'s workers."""\n\n'
                      f"{body}\n\n\n{text}")
    return target
