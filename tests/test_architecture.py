"""The project's structural rules, checked on the source: no import circle between the library's modules, no
Python file over 500 lines, test scaffolding (vexpress_model/testing) never imported by the library or the nodes,
every error class in errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vexpress_model"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules of the repository that ``path`` imports (relative imports resolved; function-level ones too)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _graph(root: Path) -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in root.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_in_the_library():
    # A package's __init__ importing its own submodules is not a circle between files: leave those edges out.
    graph = {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in _graph(PACKAGE).items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_python_file_over_500_lines():
    long_files = [
        f"{path.relative_to(REPO)}: {n}"
        for folder in (PACKAGE, REPO / "nodes")
        for path in sorted(folder.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert not long_files


def test_test_scaffolding_is_not_imported_by_the_library_or_the_nodes():
    offenders = [
        str(path.relative_to(REPO))
        for folder in (PACKAGE, REPO / "nodes")
        for path in folder.rglob("*.py")
        if "testing" not in path.relative_to(REPO).parts
        and any(".testing" in target or target.endswith("testing") for target in _imports(path))
    ]
    assert not offenders


def test_every_error_class_lives_in_errors_py():
    outside = []
    for folder in (PACKAGE, REPO / "nodes"):
        for path in folder.rglob("*.py"):
            if path == PACKAGE / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                    if node.name.endswith(("Error", "Cancelled")) or bases & {"Exception", "VExpressError"}:
                        outside.append(f"{path.relative_to(REPO)}: {node.name}")
    assert not outside
