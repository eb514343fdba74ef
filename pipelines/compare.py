"""DVC stage ``compare``: one table and plots across every evaluated variant and baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from inpnet.config import Params, load_params
from inpnet.stages.compare import compare_pipeline_reports
from pipelines.common import base_parser, run_entry


@task(name="compare-reports", cache_policy=NO_CACHE)
def compare_task(params: Params) -> dict[str, Any]:
    return compare_pipeline_reports(params)


@flow(name="compare", log_prints=True)
def compare_flow(params: Params) -> dict[str, Any]:
    summary = compare_task(params)
    print((Path(params.evaluate.out_dir) / "compare" / "table.md").read_text())
    return summary


def main(args: argparse.Namespace) -> None:
    compare_flow(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))
