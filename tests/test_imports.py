"""The import graph of curate/, read from the sources with ``ast`` (nothing is imported):
no import circle, no module reaching for another's ``_private`` names, and each wing
importing only the wings below it that docs/architecture.md ("Wings") names.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``,
relative or absolute; ``from curate.x import y`` where ``y`` is a module imports
``curate.x.y``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "curate"

# The shared helpers at curate/'s root: any wing may import them; they import only each other.
HELPERS = {"curate", "curate.console", "curate.devices", "curate.paths", "curate.procs", "curate.schemas",
           "curate.status"}

# What may import what: each wing, top to bottom, and the wings below it that it may import
# (besides itself and the helpers). docs/architecture.md's table says the same, row by row.
MAY_IMPORT = {
    "cli": {"demo", "release", "refmodel", "view", "run", "recipe", "stages", "crawl", "speech", "text", "vision",
            "media", "llm", "catalog"},
    "demo": {"release", "run", "recipe", "vision", "llm", "catalog"},
    "release": {"run", "recipe", "catalog"},
    "refmodel": {"run", "recipe", "vision", "text", "catalog"},
    "view": {"catalog"},
    "run": {"recipe", "stages", "media", "catalog"},
    "recipe": {"stages", "catalog"},
    "stages": {"crawl", "speech", "text", "vision", "media", "llm", "catalog"},
    "crawl": {"media", "catalog"},
    "speech": {"media"},
    "text": {"llm"},
    "vision": set(),
    "media": set(),
    "llm": {"catalog"},
    "catalog": set(),
}


# --- the graph ----------------------------------------------------------------
def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """(line, imported module, the name taken from it or None) for every curate import in the file;
    the module is None when it does not exist."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "curate" or alias.name.startswith("curate."):
                    yield node.lineno, alias.name if alias.name in MODULES else None, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base != "curate" and not base.startswith("curate."):
                continue  # another library
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES:
                    yield node.lineno, sub, None
                else:
                    yield node.lineno, base if base in MODULES else None, alias.name


def _graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: the first line that does}"""
    graph: dict[str, dict[str, int]] = {}
    for name, path in MODULES.items():
        edges = graph.setdefault(name, {})
        for line, target, _ in _imports(name, path):
            if target is not None and target != name:
                edges.setdefault(target, line)
    return graph


def wing(module: str) -> str:
    """``cli`` for curate.cli.parser, ``recipe`` for curate.recipe, ``helpers`` for the shared helpers."""
    if module in HELPERS:
        return "helpers"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:
        start, inside = component[0], set(component)
        paths = {start: [start]}
        queue = [start]
        while queue:  # the shortest way from start back to itself, inside the component
            v = queue.pop(0)
            for w in sorted(graph[v]):
                if w == start:
                    cycles.append(paths[v] + [start])
                    queue = []
                    break
                if w in inside and w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return cycles


def _where(graph, path: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:])) + f" -> {path[-1]}"


# --- the tests ------------------------------------------------------------------
def test_every_curate_import_names_a_module_that_exists():
    missing = [f"{MODULES[name].relative_to(ROOT)}:{line}: {taken or ''}"
               for name, path in MODULES.items() for line, target, taken in _imports(name, path) if target is None]
    assert not missing, "imports of curate modules that do not exist:\n  " + "\n  ".join(missing)


def test_no_import_cycle_between_curate_modules():
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n  " + "\n  ".join(_where(graph, c) for c in cycles)


def test_no_module_imports_another_modules_private_names():
    found = [f"{MODULES[name].relative_to(ROOT)}:{line}: from {target} import {taken}"
             for name, path in MODULES.items() for line, target, taken in _imports(name, path)
             if taken and taken.startswith("_") and not taken.startswith("__") and target != name]
    assert not found, "private names imported from another module:\n  " + "\n  ".join(found)


def _bound(tree: ast.AST) -> set[str]:
    """Every name a module binds: functions, classes, assignments, attributes it sets, imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def _class_members(tree: ast.AST) -> set[str]:
    """The names a module's classes define: methods, nested classes, class-level names."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(stmt.name)
                targets = stmt.targets if isinstance(stmt, ast.Assign) else \
                    [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
                names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _module_aliases(name: str, path: Path) -> dict[str, str]:
    """Local names bound to curate modules (``from curate import compact``, ``import curate.x as m``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = (".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                    if node.level else node.module or "")
            out.update({a.asname or a.name: f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES})
    return out


def test_no_module_reads_another_modules_private_attributes():
    """``runner._secrets(p)`` from the driver, ``module._helper`` through a module name:
    a ``_name`` read on another module, or on an object (not ``self``/``cls``) whose
    ``_name`` is a method or class attribute of another curate module's class and is not
    bound by this module."""
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}
    members = {name: _class_members(tree) for name, tree in trees.items()}
    found = []
    for name, tree in trees.items():
        bound, aliases = _bound(tree), _module_aliases(name, MODULES[name])
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            receiver = node.value.id if isinstance(node.value, ast.Name) else None
            if receiver in ("self", "cls"):
                continue
            if receiver in aliases:
                owners = [aliases[receiver]] if aliases[receiver] != name else []
            else:
                owners = [m for m, names in members.items() if m != name and node.attr in names]
                owners = owners if node.attr not in bound else []
            if owners:
                found.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)} "
                             f"(defined in {', '.join(owners)})")
    assert not found, "private attributes of other modules:\n  " + "\n  ".join(found)


def test_every_module_belongs_to_a_wing_of_the_picture():
    unknown = sorted(m for m in MODULES if wing(m) not in MAY_IMPORT and wing(m) != "helpers")
    assert not unknown, f"modules in no wing of MAY_IMPORT (and docs/architecture.md): {unknown}"


def test_wings_import_only_the_wings_below_them_that_the_picture_allows():
    graph = _graph()
    wrong = []
    for a, edges in graph.items():
        for b, line in edges.items():
            wa, wb = wing(a), wing(b)
            if wa == wb or wb == "helpers":
                continue
            if wa == "helpers" or wb not in MAY_IMPORT.get(wa, set()):
                wrong.append(f"{MODULES[a].relative_to(ROOT)}:{line}: {a} imports {b} ({wa} -> {wb})")
    assert not wrong, "imports the picture does not allow:\n  " + "\n  ".join(wrong)


def test_nothing_imports_the_cli():
    graph = _graph()
    users = [f"{a} imports {b}" for a, edges in graph.items() for b in edges
             if wing(b) == "cli" and wing(a) != "cli"]
    assert not users, users


def test_the_picture_points_one_way():
    """Each wing may import only wings listed after it: downward, so no circle between wings."""
    order = list(MAY_IMPORT)
    upward = [f"{w} -> {o}" for w, others in MAY_IMPORT.items() for o in others
              if o not in order or order.index(o) <= order.index(w)]
    assert not upward, upward


def _doc_table() -> tuple[list[tuple[str, set[str]]], set[str]]:
    """docs/architecture.md's "What may import what" table: (rows, the shared helpers)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("### What may import what", 1)[1].split("\n#", 1)[0]
    rows, helpers = [], set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or set(cells[0]) <= {"-"} or cells[0] == "wing":
            continue
        names = lambda cell: {re.sub(r"(/|\.py)$", "", n) for n in re.findall(r"`([^`]+)`", cell)}  # noqa: E731
        if cells[0] == "shared helpers":
            helpers = {"curate" if n == "__init__" else f"curate.{n}" for n in names(cells[1])}
        else:
            (w,) = names(cells[0])
            rows.append((w, names(cells[2])))
    return rows, helpers


def test_the_architecture_doc_says_what_the_test_checks():
    rows, helpers = _doc_table()
    assert rows == list(MAY_IMPORT.items())
    assert helpers == HELPERS
