"""DVC stage ``compare``: one table and plots across every evaluated variant and baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.common import base_parser, run_entry
from pipelines.evaluate import report_dir
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from inpnet.config import Params, load_params


@task(name="compare-reports", cache_policy=NO_CACHE)
def compare_task(folders: list[str], out: str, reference: str | None, max_gap_db: float) -> dict[str, Any]:
    from inpnet.evaluate.report import compare_reports

    return compare_reports(folders, out, reference=reference, max_gap_db=max_gap_db)


@flow(name="compare", log_prints=True)
def compare_flow(params: Params) -> dict[str, Any]:
    folders = [str(report_dir(params, v)) for v in params.pipeline.variants]
    folders += [str(report_dir(params, b, baseline=True)) for b in params.evaluate.baselines]
    gates = params.registry.gates
    summary = compare_task(folders, str(Path(params.evaluate.out_dir) / "compare"), gates.reference,
                           gates.max_gap_to_reference_db)
    print((Path(params.evaluate.out_dir) / "compare" / "table.md").read_text())
    return summary


def main(args: argparse.Namespace) -> None:
    compare_flow(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))
