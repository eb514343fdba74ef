"""The params the tests use: the repository's params.yaml plus the tiny test variants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from helpers.pipeline import deep_merge
from inpnet.config import Params, ResolvedVariant, parse_params

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_VARIANTS = Path(__file__).resolve().parents[1] / "fixtures" / "variants_tiny.yaml"


def repo_params_with_tiny_variants(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """``repo``'s params.yaml as a dict with the tiny variants of the test fixture profile added."""
    base = yaml.safe_load((repo / "params.yaml").read_text())
    return deep_merge(base, yaml.safe_load(TINY_VARIANTS.read_text()))


def params_for_tests() -> Params:
    """The validated params: the repository's, with the tiny variants."""
    return parse_params(repo_params_with_tiny_variants())


def tiny_variant(name: str = "inpnet_tiny") -> ResolvedVariant:
    return params_for_tests().variant(name)
