"""Stage ``compare``: one report across methods, headed by warnings about broken models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inpnet.config import Params, PromotionGates
from inpnet.stages.reports import report_dir

__all__ = ["compare", "compare_pipeline_reports"]


def compare(folders: Sequence[Path], out: Path, gates: PromotionGates) -> dict[str, Any]:
    """Compare the reports in ``folders`` into ``out``; ``gates`` name the reference and the gap to warn at."""
    from inpnet.evaluate.report import compare_reports

    return compare_reports(list(folders), out, reference=gates.reference, max_gap_db=gates.max_gap_to_reference_db)


def compare_pipeline_reports(params: Params) -> dict[str, Any]:
    """The pipeline's variants and baselines into ``<evaluate.out_dir>/compare``."""
    folders = [report_dir(params, v) for v in params.pipeline.variants]
    folders += [report_dir(params, b, baseline=True) for b in params.evaluate.baselines]
    return compare(folders, Path(params.evaluate.out_dir) / "compare", params.registry.gates)
