"""The import graph of ``src/t5lab`` has no cycles (read with ``ast``, nothing imported).

Two graphs, both acyclic: module-level imports (what runs at ``import``), and those plus the
imports inside functions (a lazy import that closes a cycle is still a cycle: move the shared piece
to a module both can import).
``if TYPE_CHECKING:`` imports are annotations only and are not edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

def modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "t5lab").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: dict[str, Path], functions: bool) -> set[str]:
    """The ``t5lab`` modules ``name`` imports (module level, plus inside functions if asked)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def target(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package[: len(package) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.With):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                mod = target(node)
                for a in node.names:
                    found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
            elif functions and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body)
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif functions and isinstance(node, ast.For | ast.While):
                visit(node.body)

    visit(tree.body)
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.add(m)
                    if m == node:
                        break
                if len(component) > 1:
                    out.append(frozenset(component))
    return out


def graph(functions: bool) -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known, functions) for name, path in known.items()}


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_module_level_imports_have_no_cycle():
    assert cycles(graph(functions=False)) == []


def test_function_level_imports_have_no_cycle():
    found = cycles(graph(functions=True))
    assert not found, f"import cycles: {[sorted(c) for c in found]}"


@pytest.mark.parametrize(
    "module,forbidden,functions",
    [
        ("t5lab.config", ("t5lab.tasks", "t5lab.models", "t5lab.formulation", "t5lab.variants"), False),
        ("t5lab.config", ("t5lab.tasks", "t5lab.models", "t5lab.formulation"), True),
        ("t5lab.formulation", ("t5lab.config",), True),
        ("t5lab.tasks.base", ("t5lab.tasks.synthetic", "t5lab.tasks.classification", "t5lab.tasks.text"), True),
        ("t5lab.variants", ("t5lab.models", "t5lab.config", "t5lab.plan"), False),  # builders load models lazily
        ("t5lab.variants", ("t5lab.config", "t5lab.plan"), True),
        ("t5lab.plan", ("t5lab.config", "t5lab.formulation", "t5lab.models"), True),
    ],
)
def test_layering(module, forbidden, functions):
    """The schema knows no tasks or models; formulation no config; tasks.base none of its subclasses;
    variants and plan never the config module (which calls the plan from its loaders)."""
    edges = graph(functions=functions)[module]
    bad = sorted(m for m in edges if m.startswith(forbidden))
    assert not bad, f"{module} imports {bad}"
