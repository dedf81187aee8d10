"""The code layout: no import circles among rftcli's modules.

The import graph is read from the source with `ast`, not by importing anything. It holds every import
statement of a module: module-level ones (run at import, including those under `if`/`try` at the top) and
function-level ones (inside a function or method, run when it is called), because a circle through a
function-level import is still two modules that need each other. An edge goes from the importing module
to the module it names: `from rftcli.formats import rows` names the module `rftcli.formats.rows`,
`from rftcli.formats import Where` names the package `rftcli.formats` (its `__init__.py`). The parent
packages Python imports on the way to a submodule are not edges: they are not a choice of the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rftcli"


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `package`."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int, str]]:
    """(imported module, line, "module" or "function") for each import of a module in `known`."""
    is_package = path.name == "__init__.py"
    found = []

    def add(target: str, node: ast.AST, level: str) -> None:
        if target in known and target != name:
            found.append((target, node.lineno, level))

    def visit(node: ast.AST, level: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = "function" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else level
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, level)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: from its own package upwards
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - child.level + 1]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:
                    submodule = f"{source}.{alias.name}"
                    add(submodule if submodule in known else source, child, level)
            visit(child, inner)

    visit(ast.parse(path.read_text(), filename=str(path)), "module")
    return found


def import_graph(package: Path) -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    """Edges between the package's modules, and where each edge is written ("file:line (level)")."""
    known = modules(package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    where: dict[tuple[str, str], list[str]] = {}
    for name, path in known.items():
        for target, line, level in imports(name, path, known):
            graph[name].add(target)
            place = f"{path.relative_to(package.parent)}:{line} ({level})"
            if place not in where.setdefault((name, target), []):  # one entry per statement
                where[name, target].append(place)
    return graph, where


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def describe(component: list[str], graph: dict[str, set[str]], where: dict[tuple[str, str], list[str]]) -> str:
    members = set(component)
    edges = [f"  {a} -> {b}: {', '.join(where[a, b])}" for a in component for b in sorted(graph[a] & members)]
    return "circle among " + ", ".join(component) + "\n" + "\n".join(edges)


def test_no_import_circles():
    graph, where = import_graph(PACKAGE)
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the graph was read, not empty
    found = circles(graph)
    assert not found, "\n".join(describe(c, graph, where) for c in found)


def test_the_check_finds_circles_through_function_level_and_package_imports(tmp_path):
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "a.py").write_text("from demo.low import X\nfrom demo import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")  # back to a, inside a function
    (pkg / "sub" / "__init__.py").write_text("def registry():\n    from demo.sub import plug\n    return plug\n")
    (pkg / "sub" / "plug.py").write_text("from demo.sub import registry  # a name from the package\n")
    (pkg / "c.py").write_text("import demo.low\nfrom demo.sub import plug\n")  # no circle
    graph, where = import_graph(pkg)
    assert graph["demo.a"] == {"demo.low", "demo.b"} and graph["demo.c"] == {"demo.low", "demo.sub.plug"}
    assert where["demo.b", "demo.a"] == ["demo/b.py:2 (function)"]
    assert sorted(circles(graph)) == [["demo.a", "demo.b"], ["demo.sub", "demo.sub.plug"]]
    (pkg / "b.py").write_text("def f():\n    return None\n")
    (pkg / "sub" / "plug.py").write_text("from demo.low import X\n")
    assert circles(import_graph(pkg)[0]) == []


def line_counts(package: Path) -> dict[str, int]:
    return {name: len(path.read_text().splitlines()) for name, path in modules(package).items()}


def test_modules_are_short_enough_to_hold_in_mind():
    counts = line_counts(PACKAGE)
    assert counts["rftcli.cli"] < 300, f"rftcli/cli.py has {counts['rftcli.cli']} lines: move a command into rftcli/commands/"
    long = {name: n for name, n in counts.items() if n > 500}
    assert not long, f"modules over 500 lines (split where they hold two subjects): {long}"


def test_line_counts_count_every_line(tmp_path):
    pkg = tmp_path / "demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "long.py").write_text("x = 1\n" * 501)
    (pkg / "short.py").write_text("'''doc'''\n\nx = 1")  # no final newline: still 3 lines
    assert line_counts(pkg) == {"demo": 0, "demo.long": 501, "demo.short": 3}
