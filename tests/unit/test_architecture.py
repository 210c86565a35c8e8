"""The folders of `harness/` tell its architecture, and the dependency rules between its parts hold.

The import graph is read from the source (every ``import`` anywhere in a module: a lazy import inside
a function, or one under ``TYPE_CHECKING``, is still a dependency), so these tests see what a reader
of the code sees, not only what one process happened to load.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import harness

HARNESS = Path(harness.__file__).parent
ROOT = HARNESS.parent

#: The core: it runs trials and records them, and never draws, parses a command line or needs pytest.
CORE = ("harness.engine", "harness.perturb", "harness.detect", "harness.results", "harness.controlled")
#: (who, must not reach, why): ``who`` and the forbidden parts are module-name prefixes; "reach" is
#: transitive, so a core module that imports a helper that imports the CLI breaks the rule too.
RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (
        CORE,
        ("harness.cli", "harness.render", "harness.pytest", "click", "rich", "jinja2", "pygments", "pytest"),
        "the core imports no CLI, renderer or pytest",
    ),
    (("harness.results",), ("harness.render",), "results import no renderer"),
    (("harness.scenario", "harness.registry"), ("harness.engine",), "declarations import no engine"),
    (("harness.detect",), ("harness.engine",), "detection imports no engine"),
    (("harness.perturb",), ("harness.engine", "harness.detect"), "perturbation imports no engine or detection"),
)
#: Modules that may sit directly in harness/, besides __init__ and __main__ (the issue of the layout:
#: only what a reader meets first).
TOP_LEVEL_LIMIT = 12

Graph = Mapping[str, frozenset[str]]


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(HARNESS.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imports(name: str, path: Path, known: Iterable[str]) -> frozenset[str]:
    """What module ``name`` imports: harness modules by full name, anything else by its top name."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name if alias.name.startswith("harness") else alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if not base.startswith("harness"):
                found.add(base.partition(".")[0])
                continue
            for alias in node.names:
                # `from harness.engine import proc_tree` depends on the module, not on the package
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    found.discard(name)
    return frozenset(found)


def import_graph() -> dict[str, frozenset[str]]:
    """Every harness module and what it imports (``harness`` itself, the lazy public API, excluded:
    it names every part on purpose)."""
    names = _module_names()
    graph = {name: _imports(name, path, names) - {"harness"} for name, path in names.items()}
    del graph["harness"]
    return graph


def part_of(module: str) -> str:
    """The part a module belongs to: its subpackage of harness, or itself at the top level."""
    pieces = module.split(".")
    if pieces[0] != "harness" or len(pieces) < 2:
        return module
    top = f"harness.{pieces[1]}"
    return top


def parts_graph(graph: Graph) -> dict[str, frozenset[str]]:
    parts: dict[str, set[str]] = {}
    for module, deps in graph.items():
        mine = part_of(module)
        parts.setdefault(mine, set()).update(
            part_of(d) for d in deps if d.startswith("harness.") and part_of(d) != mine
        )
    return {k: frozenset(v) for k, v in parts.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in graph:
                continue
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _matches(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(graph: Graph) -> list[str]:
    """Every broken rule, as "rule: A -> B -> C" (the import path that breaks it)."""
    broken = []
    for sources, forbidden, rule in RULES:
        for start in sorted(m for m in graph if _matches(m, sources)):
            parent: dict[str, str | None] = {start: None}
            queue = deque([start])
            while queue:
                node = queue.popleft()
                if node != start and _matches(node, forbidden):
                    path = [node]
                    while (prev := parent[path[-1]]) is not None:
                        path.append(prev)
                    broken.append(f"{rule}: {' -> '.join(reversed(path))}")
                    continue
                for succ in sorted(graph.get(node, ())):
                    if succ not in parent:
                        parent[succ] = node
                        queue.append(succ)
    return broken


@pytest.fixture(scope="module")
def graph() -> dict[str, frozenset[str]]:
    return import_graph()


def test_no_module_imports_itself_around_a_circle(graph: Graph) -> None:
    found = cycles(graph)
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_parts_are_layered(graph: Graph) -> None:
    # Subpackages and top-level modules form a DAG: a part never depends on a part that depends on it.
    found = cycles(parts_graph(graph))
    assert not found, "parts that depend on each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_dependency_rules_hold(graph: Graph) -> None:
    found = violations(graph)
    assert not found, "\n".join(found)


def test_a_core_module_importing_the_cli_breaks_the_rules(graph: Graph) -> None:
    broken = dict(graph)
    broken["harness.perturb.plan"] = graph["harness.perturb.plan"] | {"harness.cli"}
    found = violations(broken)
    assert "the core imports no CLI, renderer or pytest: harness.perturb.plan -> harness.cli" in found
    # ... and every core module that reaches plan breaks it too, through it.
    assert any(v.startswith("the core imports no CLI") and "harness.engine.driver ->" in v for v in found)


def test_a_circle_is_found_however_long(graph: Graph) -> None:
    broken = dict(graph)
    broken["harness.errors"] = graph["harness.errors"] | {"harness.engine.driver"}
    (circle,) = cycles(broken)
    assert {"harness.errors", "harness.engine.driver"} <= set(circle)


def test_lazy_and_type_checking_imports_count() -> None:
    # The plugin imports its heavy half inside a hook, and that is still a dependency.
    names = _module_names()
    assert "harness.pytest.item" in _imports("harness.pytest.plugin", names["harness.pytest.plugin"], names)


def test_the_top_level_holds_only_what_a_reader_meets_first() -> None:
    top = sorted(p.stem for p in HARNESS.glob("*.py") if p.stem not in {"__init__", "__main__"})
    assert len(top) <= TOP_LEVEL_LIMIT, top


def _subpackages() -> list[Path]:
    return sorted(p.parent for p in HARNESS.rglob("__init__.py") if p.parent != HARNESS)


def test_every_subpackage_says_its_job_and_names_its_modules() -> None:
    for folder in _subpackages():
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))
        assert doc, f"{folder.name}/__init__.py needs a docstring that says its job"
        assert len(doc) > 200, f"{folder.name}/__init__.py: a paragraph, not a label"
        for module in sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__"):
            assert f"`{module}`" in doc, f"{folder.name}/__init__.py does not name its module {module}"


def test_every_subpackage_is_installed() -> None:
    # An editable install finds any folder; a wheel only ships the packages pyproject lists.
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.relative_to(ROOT).parts) for p in _subpackages()}
    assert folders | {"harness"} <= listed
