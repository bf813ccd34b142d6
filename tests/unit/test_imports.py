"""The package's import graph: no module of lth imports itself back through others, and `import lth` stays light.

The graph is read from the source with `ast` (nothing is imported), so a cycle hidden in a function-level (lazy)
import counts too: it is a design cycle even when Python happens to tolerate it at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = "lth"
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("wandb", "torchvision", "sklearn", "mnist1d", "matplotlib", "pandas")


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name → file, for every .py file of the package (a package's own name maps to its __init__)."""
    found: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, except those under `if TYPE_CHECKING:` (its else branch counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _owning_module(name: str, modules: set[str]) -> str | None:
    """`name` itself if it is a module of the package, else its longest prefix that is one (lth.a.b.func → lth.a.b)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def edges_of(module: str, path: Path, modules: set[str], package: str = PACKAGE) -> set[str]:
    """The package modules that `module` (source at `path`) imports, by the rules in this file's docstring."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # `from pkg import sub` names the submodule pkg.sub; `from pkg.mod import func` names pkg.mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            if target != package and not target.startswith(package + "."):
                continue
            owner = _owning_module(target, modules)
            if owner is not None and owner != module:
                out.add(owner)
    return out


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    files = module_files(root, package)
    names = set(files)
    return {name: edges_of(name, path, names, package) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-loop), each sorted, as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def shortest_loop(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete loop through the component's first module (for a readable failure message)."""
    start = component[0]
    members = set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component


# --- the rules themselves, on a small synthetic package ---------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_edge_rules_on_a_synthetic_package(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg.sub import thing\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/thing.py": "from . import other\nfrom .other import helper\nimport os\n",
        "pkg/sub/other.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from pkg.sub.thing import X\n"
            "def f():\n    from ..top import y\n    import pkg.sub.thing as t\n"
        ),
        "pkg/top.py": "from pkg.sub.other import helper\nfrom pkg import sub\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {"pkg.sub.thing"},  # a package __init__ importing its submodule is an edge
        "pkg.sub": set(),
        "pkg.sub.thing": {"pkg.sub.other"},  # relative, both spellings; no implicit edge to pkg.sub
        "pkg.sub.other": {"pkg.top", "pkg.sub.thing"},  # lazy imports count, TYPE_CHECKING ones do not
        "pkg.top": {"pkg.sub.other", "pkg.sub"},
    }
    component = ["pkg.sub.other", "pkg.sub.thing", "pkg.top"]
    assert cycles(graph) == [component]
    assert shortest_loop(graph, component) == ["pkg.sub.other", "pkg.sub.thing", "pkg.sub.other"]


def test_sibling_imports_are_no_cycle_with_the_package_init(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "from pkg.b import g\n",
        "pkg/b.py": "def g():\n    return 1\n",
    })
    assert cycles(import_graph(tmp_path, "pkg")) == []
    _write(tmp_path, {"pkg/b.py": "def g():\n    from pkg import a\n"})  # a lazy import back closes a loop
    assert cycles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b"]]


# --- the package ----------------------------------------------------------------------------------------------


def test_lth_has_no_import_cycle():
    graph = import_graph()
    assert "lth.runner" in graph and graph["lth.cli"], "the graph reader found no imports: the reader is broken"
    found = cycles(graph)
    loops = ["  " + " -> ".join(shortest_loop(graph, c)) + f"   (component: {', '.join(c)})" for c in found]
    assert not found, "import cycles in lth (lazy imports included):\n" + "\n".join(loops)


def test_import_lth_loads_no_optional_heavy_dependency():
    code = f"import sys, lth; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert proc.stdout.strip() == "[]", proc.stdout
