"""Lint and types as tests: ruff and mypy from this environment, configured in pyproject.toml,
and the house rule that a ``# type: ignore`` names its error codes and says why on its line.

ruff and the ignore scan take well under a second. mypy takes about 3 s with its cache and
about 100 s without one (a fresh clone on two cores), so it runs in the slow tier; ``.ci/run``
and the pre-commit hook run it on every change anyway.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("inpnet", "pipelines", "tests", "bench", ".ci")

# `# type: ignore[code, other-code]  # why`: codes in brackets, then a comment with a reason
_IGNORE = re.compile(r"type:\s*ignore")
_WELL_FORMED = re.compile(r"type:\s*ignore\[[a-z][a-z0-9-]*(\s*,\s*[a-z][a-z0-9-]*)*\]\s+#\s*\S")


def _tool(name: str) -> Path:
    exe = Path(sys.executable).parent / name
    if not exe.is_file():
        pytest.skip(f"{name} is not in this environment ({exe}); `uv sync` installs the dev group")
    return exe


def _run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=REPO, capture_output=True, text=True, timeout=900, check=False)


def bad_type_ignores(source: str) -> list[int]:
    """Lines of ``source`` with a ``type: ignore`` comment lacking bracketed codes or a reason."""
    return [
        tok.start[0]
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
        and (m := _IGNORE.search(tok.string)) is not None
        and not _WELL_FORMED.match(tok.string, m.start())
    ]


@pytest.mark.parametrize(
    ("line", "bad"),
    [
        ("x = f()  # type: ignore\n", True),
        ("x = f()  # type: ignore[attr-defined]\n", True),
        ("x = f()  # type: ignore  # timm lacks stubs\n", True),
        ("x = f()  # type: ignore[attr-defined]  #\n", True),
        ("x = f()  #type:ignore[misc]\n", True),
        ("x = f()  # type: ignore[attr-defined]  # timm stubs lack it\n", False),
        ("x = f()  # type: ignore[arg-type, misc]  # both, on purpose\n", False),
        ('x = "# type: ignore"  # a string, not a comment\n', False),
        ("x = f()  # noqa: E501\n", False),
    ],
)
def test_the_type_ignore_rule_tells_good_from_bad(line: str, bad: bool) -> None:
    assert bool(bad_type_ignores(line)) is bad


def test_every_type_ignore_names_its_codes_and_a_reason() -> None:
    problems = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            problems += [f"{path.relative_to(REPO)}:{n}" for n in bad_type_ignores(path.read_text(encoding="utf-8"))]
    assert not problems, (
        "write `# type: ignore[code]  # reason` (a bare or unexplained ignore hides the next real error): "
        + ", ".join(problems)
    )


def test_ruff_check_is_clean() -> None:
    proc = _run(_tool("ruff"), "check", "--output-format", "concise", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean() -> None:
    proc = _run(_tool("ruff"), "format", "--check", ".")
    assert proc.returncode == 0, "run `uv run ruff format .`:\n" + proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    proc = _run(_tool("mypy"))  # the files and the strictness come from pyproject.toml
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout
