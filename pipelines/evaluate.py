"""DVC stages ``evaluate@<variant>`` and ``baselines``: score methods on the val shards
against the mask bank.

``--method VARIANT`` evaluates ``<train.out_dir>/<VARIANT>`` into ``reports/variants/VARIANT``
with the classical baselines (``reports/baselines/*``) as reference rows when they exist;
``--baselines`` evaluates every method in ``evaluate.baselines`` into ``reports/baselines/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.common import base_parser, run_entry
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from inpnet.config import Params, load_params


def report_dir(params: Params, name: str, *, baseline: bool = False) -> Path:
    return Path(params.evaluate.out_dir) / ("baselines" if baseline else "variants") / name


@task(name="evaluate-method", cache_policy=NO_CACHE)
def evaluate_task(params: Params, spec: str, out: str, references: list[str]) -> str:
    from inpnet.evaluate.evaluator import evaluate
    from inpnet.evaluate.methods import resolve_method

    cfg = params.evaluate
    method = resolve_method(spec, radius=cfg.inpaint_radius, workers=cfg.workers)
    try:
        evaluate(
            method,
            Path(params.data.shards_dir) / "val",
            Path(params.masks.out_dir),
            out_dir=out,
            cfg=cfg,
            references=references,
        )
    finally:
        method.close()
    return out


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: Params, variant: str | None = None, baselines: bool = False) -> list[str]:
    if baselines:
        return [
            evaluate_task(params, name, str(report_dir(params, name, baseline=True)), [])
            for name in params.evaluate.baselines
        ]
    assert variant is not None
    resolved = params.variant(variant)
    refs = [str(p) for name in params.evaluate.baselines if (p := report_dir(params, name, baseline=True)).is_dir()]
    ckpt = Path(resolved.train.out_dir) / variant
    return [evaluate_task(params, str(ckpt), str(report_dir(params, variant)), refs)]


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    if args.method:
        params.variant(args.method)  # unknown variant: a clear ConfigError before any work
    evaluate_flow(params, args.method, args.baselines)


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--method", help="a trained variant to evaluate")
    group.add_argument("--baselines", action="store_true", help="evaluate the classical baselines")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_entry(main, build_parser()))
