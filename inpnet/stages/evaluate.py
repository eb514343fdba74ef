"""Stages ``evaluate@<variant>`` and ``baselines``: score methods on images against masks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inpnet.config import EvalConfig, Params
from inpnet.stages.reports import report_dir

if TYPE_CHECKING:
    from inpnet.evaluate.evaluator import EvalResult

__all__ = ["evaluate_baselines", "evaluate_method", "evaluate_variant"]


def evaluate_method(
    cfg: EvalConfig,
    spec: str,
    images: Path,
    masks: Path,
    out: Path,
    *,
    references: Sequence[Path] = (),
    device: str = "cpu",
    save_outputs: bool = False,
    limit: int | None = None,
) -> EvalResult:
    """Score method ``spec`` (a baseline name, a checkpoint folder or ``models:/...``) into ``out``."""
    from inpnet.evaluate.evaluator import evaluate
    from inpnet.evaluate.methods import resolve_method

    method = resolve_method(spec, device=device, radius=cfg.inpaint_radius, workers=cfg.workers)
    try:
        return evaluate(
            method,
            images,
            masks,
            out_dir=out,
            cfg=cfg,
            save_outputs=save_outputs,
            limit=limit,
            references=list(references),
            device=device,
        )
    finally:
        method.close()


def evaluate_baselines(params: Params) -> list[Path]:
    """Every method of ``evaluate.baselines`` on the val shards and the bank, into ``reports/baselines``."""
    images, masks = Path(params.data.shards_dir) / "val", Path(params.masks.out_dir)
    outs = [report_dir(params, name, baseline=True) for name in params.evaluate.baselines]
    for name, out in zip(params.evaluate.baselines, outs, strict=True):
        evaluate_method(params.evaluate, name, images, masks, out)
    return outs


def evaluate_variant(params: Params, variant: str) -> Path:
    """The trained ``variant`` (its checkpoint under ``train.out_dir``), with the baselines as references."""
    resolved = params.variant(variant)
    refs = [p for name in params.evaluate.baselines if (p := report_dir(params, name, baseline=True)).is_dir()]
    out = report_dir(params, variant)
    evaluate_method(
        params.evaluate,
        str(Path(resolved.train.out_dir) / variant),
        Path(params.data.shards_dir) / "val",
        Path(params.masks.out_dir),
        out,
        references=refs,
    )
    return out
