"""The house's dependency arrows point inward: rewards <- envs <- serve/rl <- vlreward, checked on the real imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the project packages it must never import
FORBIDDEN = {
    "rewards": {"envs", "serve", "rl", "vlreward", "bench"},
    "envs": {"serve", "rl", "vlreward", "bench"},
    "serve": {"rl", "vlreward", "bench"},
    "rl": {"vlreward", "bench"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level package names of every import in a file, function-level imports included."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_inward(package):
    wrong = {f"{path.relative_to(ROOT)} imports {name}"
             for path in (ROOT / package).rglob("*.py")
             for name in imported_packages(path) & FORBIDDEN[package]}
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
