"""dvc.yaml lists, for every stage, exactly the code the stage runs.

The code a stage runs is derived from its command (``python -m pipelines.run X``: the runner,
then ``pipelines.X``): every module
of ``inpnet`` and ``pipelines`` that it imports, directly or through other modules, at the
top of a file or inside a function (a lazy import runs too), with the packages whose
``__init__`` each import executes. A change to any of these files must rerun the stage, so
each must be covered by a ``deps`` entry (the file, or a folder holding it); an entry that
covers nothing the stage imports, or that another entry of the stage already covers, is
an error too.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("inpnet", "pipelines")


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def _imports_of(path: Path) -> frozenset[str]:
    """The first-party modules ``path`` imports anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.update(m for m in _with_parents(name) if _module_file(m) is not None)
    return frozenset(found)


def code_of(entry: str) -> set[Path]:
    """Every first-party file that ``python -m entry`` can execute, relative to the repo."""
    seen: set[str] = set()
    todo = _with_parents(entry)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        assert path is not None, f"{module} is imported but has no file"
        todo.extend(_imports_of(path) - seen)
    return {p.relative_to(REPO) for m in seen if (p := _module_file(m)) is not None}


def _stages() -> list[tuple[str, str, list[str]]]:
    """(stage, entry module, deps) for every stage of dvc.yaml; foreach stages once, as templates."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    out = []
    for name, stage in spec["stages"].items():
        body = stage.get("do", stage)
        match = re.search(r"python -m pipelines\.run (\w+)", body["cmd"])
        assert match, f"stage {name}: command {body['cmd']!r} is not `python -m pipelines.run STAGE`"
        deps = [next(iter(d)) if isinstance(d, dict) else d for d in body.get("deps", [])]
        out.append((name, f"pipelines.{match.group(1)}", deps))
    return out


def _covers(dep: str, path: Path) -> bool:
    return path == Path(dep) or Path(dep) in path.parents


@pytest.mark.parametrize(("stage", "entry", "deps"), _stages(), ids=[s[0] for s in _stages()])
def test_stage_deps_cover_exactly_the_code_it_runs(stage: str, entry: str, deps: list[str]) -> None:
    code = code_of("pipelines.run") | code_of(entry)  # the runner, then the stage module it runs
    code_deps = [d for d in deps if d.split("/")[0] in PACKAGES]
    missing = sorted(str(p) for p in code if not any(_covers(d, p) for d in code_deps))
    assert not missing, f"dvc.yaml stage {stage!r} runs these files but does not list them in deps: {missing}"
    twice = sorted(
        {d for d in code_deps if code_deps.count(d) > 1}
        | {d for d in code_deps for other in code_deps if other != d and Path(other) in Path(d).parents}
    )
    assert not twice, f"dvc.yaml stage {stage!r} lists these deps twice (or inside a listed folder): {twice}"
    unused = [d for d in code_deps if not any(_covers(d, p) for p in code)]
    assert not unused, f"dvc.yaml stage {stage!r} lists code it never imports: {unused}"
    missing_files = [
        d
        for d in deps
        if not (REPO / d.replace("${item}", "x")).exists() and "${" not in d and d.split("/")[0] in PACKAGES
    ]
    assert not missing_files, f"dvc.yaml stage {stage!r} lists files that do not exist: {missing_files}"


def test_the_derivation_follows_lazy_imports_and_packages() -> None:
    code = code_of("pipelines.masks")
    assert Path("pipelines/masks.py") in code and Path("inpnet/config.py") in code
    assert Path("inpnet/masks/bank.py") in code  # imported inside the flow's task function
    assert Path("inpnet/masks/__init__.py") in code and Path("inpnet/__init__.py") in code
    assert Path("inpnet/models/cmgan.py") not in code
