"""DVC stages ``evaluate@<variant>`` and ``baselines``: score methods on the val shards
against the mask bank.

``--method VARIANT`` evaluates ``<train.out_dir>/<VARIANT>`` into ``reports/variants/VARIANT``
with the classical baselines (``reports/baselines/*``) as reference rows when they exist;
``--baselines`` evaluates every method in ``evaluate.baselines`` into ``reports/baselines/``.
"""

from __future__ import annotations

import argparse

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from inpnet.config import Params, load_params
from inpnet.stages.evaluate import evaluate_baselines, evaluate_variant
from pipelines.common import base_parser, run_entry


@task(name="evaluate-baselines", cache_policy=NO_CACHE)
def baselines_task(params: Params) -> list[str]:
    return [str(p) for p in evaluate_baselines(params)]


@task(name="evaluate-variant", cache_policy=NO_CACHE)
def variant_task(params: Params, variant: str) -> str:
    return str(evaluate_variant(params, variant))


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: Params, variant: str | None = None, baselines: bool = False) -> list[str]:
    if baselines:
        return baselines_task(params)
    assert variant is not None
    return [variant_task(params, variant)]


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
