"""The house's dependency arrows point inward: rewards <- envs <- serve/rl <- vlreward, checked on the real imports;
and no module imports, however lazily, one that imports it back."""

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rewards", "envs", "serve", "rl", "vlreward", "bench")
# package -> the project packages it must never import
FORBIDDEN = {
    "rewards": {"envs", "serve", "rl", "vlreward", "bench"},
    "envs": {"serve", "rl", "vlreward", "bench"},
    "serve": {"rl", "vlreward", "bench"},
    "rl": {"vlreward", "bench"},
}


def module_name(path: Path, root: Path) -> str:
    """`rl/train.py` -> `rl.train`; a package's `__init__.py` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a `from ... import` statement in `module` names, a relative one (`from .x import y`) resolved."""
    if not node.level:
        return node.module
    package = module.split(".")[:None if is_package else -1]
    return ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, dict[str, str]]:
    """module -> {project module it imports: where ("path:line")}, from every import statement in the file: module
    level, inside functions and under `if TYPE_CHECKING:` alike. `from a import b` counts as importing `a.b` when
    that is a module, else `a`; a package's own `__init__` is not counted for its submodules."""
    files = {module_name(path, root): path for package in packages for path in (root / package).rglob("*.py")}

    def project_module(name: str) -> str | None:  # the longest prefix of `name` that is a project module
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in files.items():
        graph[module] = edges = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = imported_from(node, module, is_package=path.name == "__init__.py")
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in filter(None, map(project_module, names)):
                if target != module:
                    edges.setdefault(target, f"{path.relative_to(root)}:{node.lineno}")
    return graph


def shortest_cycle(graph: dict[str, dict[str, str]], start: str) -> list[str] | None:
    """The shortest chain of imports from `start` back to itself, or None."""
    paths, queue = {start: [start]}, deque([start])
    while queue:
        module = queue.popleft()
        for target in graph[module]:
            if target == start:
                return paths[module] + [start]
            if target not in paths:
                paths[target] = paths[module] + [target]
                queue.append(target)
    return None


def import_cycles(graph: dict[str, dict[str, str]]) -> list[str]:
    """Each cycle once, as `a -> b (a.py:3) -> a (b.py:9)`."""
    cycles = {}
    for module in sorted(graph):
        cycle = shortest_cycle(graph, module)
        if cycle and frozenset(cycle) not in cycles:
            cycles[frozenset(cycle)] = cycle[0] + "".join(
                f" -> {b} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:]))
    return list(cycles.values())


def test_no_module_imports_one_that_imports_it_back():
    assert not import_cycles(import_graph()), "\n".join(import_cycles(import_graph()))


def test_lazy_and_type_checking_imports_close_a_cycle(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (tmp_path / "pkg" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\n")
    assert import_cycles(import_graph(tmp_path, ["pkg"])) == ["pkg.a -> pkg.b (pkg/a.py:2) -> pkg.a (pkg/b.py:3)"]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_inward(package):
    wrong = {f"{where} imports {target}"
             for module, edges in import_graph().items() if module.split(".")[0] == package
             for target, where in edges.items() if target.split(".")[0] in FORBIDDEN[package]}
    assert not wrong, sorted(wrong)


@pytest.mark.parametrize("module, absent", [
    ("rewards.train", ("ray", "fastapi")),
    ("rewards.evaluate", ("ray", "fastapi")),
    ("serve.client", ("ray", "fastapi", "starlette")),
])
def test_module_imports_without_heavy_frameworks(module, absent):
    code = (f"import sys, {module}; loaded = [m for m in {absent!r} if m in sys.modules]; "
            "assert not loaded, f'imported {loaded}'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
