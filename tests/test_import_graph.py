"""The package's import graph: settings flow one way (config -> schema -> port.settings -> stage
modules), port.settings stays light, and no two modules import each other, even inside functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "port"
HEAVY = ("torch", "torchvision", "h5py", "pandas", "diffusers", "numpy", "scipy", "matplotlib", "sklearn")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports anywhere in it (function-local imports too), as absolute names."""
    package = module_name(path).split(".") if path.name == "__init__.py" else module_name(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module:  # `from . import paths` imports port.paths, not (only) the package's face
                found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {other for other in imports_of(path) if other in files and other != name}
            for name, path in files.items()}


def test_the_settings_package_imports_no_stage_module_and_nothing_heavy():
    edges = graph()
    for name, targets in edges.items():
        if name.startswith("port.settings"):
            stray = {t for t in targets if not t.startswith("port.settings") and t not in ("port.paths", "port.errors")}
            assert not stray, f"{name} imports {sorted(stray)}: port.settings may import port.paths and port.errors only"
            heavy = {m for m in imports_of(PACKAGE.parent / (name.replace(".", "/") + ".py")
                                           if not name.endswith("settings") else PACKAGE / "settings" / "__init__.py")
                     if m.split(".")[0] in HEAVY}
            assert not heavy, f"{name} imports {sorted(heavy)}"
    code = "import sys, port.settings; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (HEAVY,)
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"importing port.settings loads {loaded}"


def test_no_stage_module_reads_the_schema():
    """Defaults reach a stage through port.settings (its builders, TrainSettings): no module outside
    the package opens the schema or asks it for defaults."""
    for name, targets in graph().items():
        if not name.startswith("port.settings"):
            assert "port.settings.schema" not in targets, f"{name} reads the schema (port.settings.schema)"
            source = (PACKAGE.parent / (name.replace(".", "/") + ".py")).read_text() if name != "port" else ""
            assert "schema.yaml" not in source, f"{name} names schema.yaml"


def test_no_import_cycle():
    edges = graph()
    visiting, done, cycles = [], set(), []

    def visit(node):
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for target in sorted(edges[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", ["port.settings.training", "port.settings.studies"])
def test_the_graph_sees_relative_imports(module):
    """The graph is the real one: a settings module's own imports are found (the test above cannot pass by
    seeing nothing)."""
    assert "port.settings.schema" in graph()[module] or "port.settings.training" in graph()[module]
