"""DVC stage ``register``: log every trained variant to the MLflow registry, then promote.

Each variant becomes a new version of its family's registered model (alias
``challenger``), tagged with its evaluation metrics and the hashes of the shard manifest
and the mask bank; then ``promote`` moves ``champion`` where the gates in
``registry.gates`` hold. ``reports/registry.json`` summarises the decisions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from pipelines.common import base_parser, run_entry
from pipelines.evaluate import report_dir
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from inpnet.config import Params, load_params


def _tracking_uri(params: Params) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params.registry.tracking_uri


@task(name="register-variant", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def register_task(params: Params, variant: str) -> dict:
    from inpnet.registry.models import register

    resolved = params.variant(variant)
    version = register(
        Path(resolved.train.out_dir) / variant,
        report_dir(params, variant) / "metrics.json",
        tracking_uri=_tracking_uri(params),
        model_names=params.registry.model_names,
        experiment=params.registry.experiment,
        shard_manifest=Path(params.data.shards_dir) / "train" / "manifest.json",
        bank_manifest=Path(params.masks.out_dir) / "manifest.json",
    )
    return dataclasses.asdict(version)


@task(name="promote-model", cache_policy=NO_CACHE)
def promote_task(params: Params, name: str) -> dict:
    from inpnet.registry.promote import promote

    decision = promote(name, tracking_uri=_tracking_uri(params), gates=params.registry.gates)
    return {**dataclasses.asdict(decision), "champion": decision.champion}


@flow(name="register", log_prints=True)
def register_flow(params: Params, out: str = "reports/registry.json") -> dict:
    from inpnet.registry.models import init_store

    init_store(_tracking_uri(params))  # schema upgrade once, before any writer
    registered = {}
    decisions = {}
    # Variants of one family are versions of one registered model: register and promote
    # them in order, so each is judged against the champion that the previous one left.
    for variant in params.pipeline.variants:
        version = register_task(params, variant)
        registered[variant] = version
        decisions[variant] = promote_task(params, version["name"])
    summary = {"registered": registered, "decisions": decisions}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for variant, d in decisions.items():
        verdict = "promoted to champion" if d["promoted"] else "not promoted"
        print(f"{variant}: {d['name']} v{d['challenger']} {verdict}: {'; '.join(d['reasons'])}")
    return summary


def main(args: argparse.Namespace) -> None:
    register_flow(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))
