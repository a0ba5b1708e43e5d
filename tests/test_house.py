"""The house stays as the README's map draws it: every import (at module level or inside a
function) read with `ast`, no import circle between modules, no two top-level folders importing
each other, and the layers inside `engine/` pointing one way (the CLI on top; nothing below it
reaching up to it, and the core never reaching into replays, actors or the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("engine", "providers", "strategies")


def _modules() -> dict[str, Path]:
    out = {}
    for top in FOLDERS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, wherever in the file (type-checking blocks apart:
    they never run)."""

    def resolve(dotted: str | None) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if _is_type_checking(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                target = resolve(alias.name)
                if target:
                    found.add(target)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = name.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[:len(base) - node.level + 1]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            for alias in node.names:
                target = resolve(f"{full}.{alias.name}")
                if target is None or target == name:
                    target = resolve(full)
                if target:
                    found.add(target)

    Visitor().visit(ast.parse(path.read_text(), filename=str(path)))
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "engine":
        return parts[0]
    if len(parts) > 1 and parts[1] in ("backtests", "actors", "cli"):
        return f"engine.{parts[1]}"
    return "engine"


def test_no_module_imports_itself_round_a_circle():
    assert _cycles(_graph()) == []


def test_no_two_top_level_folders_import_each_other():
    arrows = {(a.split(".")[0], b.split(".")[0]) for a, outs in _graph().items() for b in outs}
    arrows = {(a, b) for a, b in arrows if a != b}
    both = sorted((a, b) for a, b in arrows if (b, a) in arrows)
    assert both == [], f"two-way imports between folders: {both}"
    assert ("engine", "strategies") not in arrows
    assert ("engine", "providers") not in arrows  # providers are plug-ins, loaded by path


def test_layers_inside_the_engine_point_one_way():
    allowed = {
        "engine": {"engine"},
        "engine.backtests": {"engine", "engine.backtests", "engine.actors"},
        "engine.actors": {"engine", "engine.actors", "engine.backtests"},
        "engine.cli": {"engine", "engine.backtests", "engine.actors", "engine.cli"},
    }
    wrong = sorted((a, b) for a, outs in _graph().items() for b in outs
                   if _layer(a) in allowed and _layer(b).startswith("engine")
                   and _layer(b) not in allowed[_layer(a)])
    assert wrong == [], f"imports reaching up a layer: {wrong}"


def test_the_walk_sees_real_imports():
    # The checks above only mean something if the walk finds imports at all, lazy ones too.
    graph = _graph()
    assert "engine.clock" in graph["engine.feed"]
    assert "engine.backtests.replay" in graph["engine.cli._backtest"]  # inside a function
    assert "engine.backtests" not in graph["engine.live"]
