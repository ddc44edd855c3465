"""The package layout's rules, checked on the source: an acyclic module-level import graph, imports that
only point from ``verifier`` to ``rubric_pipeline``, no vllm import, and no module over 400 lines."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rubric_pipeline", "verifier")
MAX_LINES = 400
# Libraries that take seconds to import: a project module importing one at module level may be imported
# lazily (inside a function), so that `--help`, the integrations and the gateway start-up stay light.
HEAVY = frozenset({"torch", "transformers", "trl", "datasets", "sentence_transformers", "peft"})
# Lazy imports of light modules not yet hoisted, in training modules another change is rewriting (remove
# an entry when its file is done).
PENDING_LAZY: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {
    module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
}


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: the module body and its top-level ``if``/``try`` blocks
    (``if TYPE_CHECKING:`` included, so a cycle cannot hide behind type-only imports either)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try):
            pending += node.body + node.orelse + getattr(node, "finalbody", [])
            pending += [stmt for handler in getattr(node, "handlers", []) for stmt in handler.body]
    return found


def imported_names(module: str, *, top_level: bool = True) -> set[str]:
    """Every absolute module name ``module`` imports (all of them with ``top_level=False``)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    nodes = _top_level_imports(tree) if top_level else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module)
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return names


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (a package's ``__init__`` included)."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        edges: set[str] = set()
        for name in imported_names(module):
            parts = name.split(".")
            # importing a.b.c runs a/__init__ and a/b/__init__ first
            edges.update(
                ".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES
            )
        edges.discard(module)
        graph[module] = edges
    return graph


def test_the_walk_finds_both_packages_and_their_edges():
    graph = project_graph()
    assert {"rubric_pipeline.core.records", "verifier.judge.prompt", "verifier.cli"} <= set(graph)
    assert "rubric_pipeline.core.records" in graph["verifier.judge.prompt"]


def test_module_level_imports_are_acyclic():
    try:
        order = list(TopologicalSorter(project_graph()).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert set(order) == set(MODULES)


def _function_level_project_imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    top = {id(node) for node in _top_level_imports(tree)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in top:
            target = _absolute(node, module)
            submodules = {f"{target}.{alias.name}" for alias in node.names} & set(MODULES)
            names |= submodules or ({target} & set(MODULES))
        elif isinstance(node, ast.Import) and id(node) not in top:
            names |= {alias.name for alias in node.names} & set(MODULES)
    return names


def test_project_imports_inside_functions_only_defer_heavy_libraries():
    heavy = {
        module for module in MODULES if any(name.split(".")[0] in HEAVY for name in imported_names(module))
    }
    assert "verifier.train.completion_lm" in heavy  # the walk sees a real heavy module
    offenders = {
        module: sorted(_function_level_project_imports(module) - heavy)
        for module in MODULES
        if module not in PENDING_LAZY
    }
    assert not {module: names for module, names in offenders.items() if names}


def test_rubric_pipeline_never_imports_verifier():
    offenders = {
        module: sorted(
            name for name in imported_names(module, top_level=False) if name.split(".")[0] == "verifier"
        )
        for module in MODULES
        if module.startswith("rubric_pipeline")
    }
    assert not {module: names for module, names in offenders.items() if names}


def test_no_module_imports_vllm():
    offenders = [
        module
        for module in MODULES
        if any(name.split(".")[0] == "vllm" for name in imported_names(module, top_level=False))
    ]
    assert not offenders, f"modules importing vllm (the engine is a separate process): {offenders}"


def test_no_module_is_over_the_line_limit():
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in MODULES.items()}
    assert not {module: n for module, n in sizes.items() if n > MAX_LINES}
