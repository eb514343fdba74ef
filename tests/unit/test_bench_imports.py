"""The benchmarks import what the package has: ``bench/`` is not run by the tests, so a moved
or renamed name would only fail when someone runs a benchmark (bench/train.py's ViT peer once
imported ``build_loss`` from where it no longer lived)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = sorted((REPO / "bench").glob("*.py"))


def _inpnet_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every ``from inpnet... import name`` in ``path``, lazy ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        (node.lineno, node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "inpnet"
        for alias in node.names
    ]


@pytest.mark.parametrize("path", BENCH, ids=[p.name for p in BENCH])
def test_every_inpnet_name_a_benchmark_imports_exists(path: Path) -> None:
    missing = []
    for line, module, name in _inpnet_imports(path):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")  # a submodule
            except ModuleNotFoundError:
                missing.append(f"{path.name}:{line}: {module}.{name}")
    assert not missing, missing


def test_the_scan_sees_lazy_imports(tmp_path: Path) -> None:
    f = tmp_path / "b.py"
    f.write_text("def f():\n    from inpnet.models.build import nope\n")
    assert _inpnet_imports(f) == [(2, "inpnet.models.build", "nope")]
