"""DVC stage ``train@<variant>``: train one variant on the training shards.

The task retries once and resumes from the last checkpoint, so a crash (or a killed
``dvc repro``: the folder is a ``persist`` output) costs at most ``train.checkpoint_every``
steps. A finished checkpoint, or one trained on other params or data, is not continued:
the stage starts from step 0 (:func:`inpnet.stages.train.train_variant`). Every ``train.val_every`` steps the run scores a fixed
subset of the val shards with the evaluation mask bank (both are stage deps). MLflow tracks the run at ``registry.tracking_uri``
(or ``$MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import argparse

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from inpnet.config import Params, load_params
from inpnet.stages.train import train_variant
from pipelines.common import base_parser, run_entry


@task(name="train-variant", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def train_task(params: Params, variant: str) -> str:
    # resume: a retry (or a re-run after a kill) continues from the checkpoint, unless it is
    # finished or was trained on other params or data (models/ is a persist output of DVC)
    return str(train_variant(params, variant, resume=True, fresh_on_change=True))


@flow(name="train", log_prints=True)
def train_flow(params: Params, variant: str) -> str:
    return train_task(params, variant)


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    params.variant(args.variant)  # unknown variant: a clear ConfigError before Prefect starts
    train_flow(params, args.variant)


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__)
    parser.add_argument("--variant", required=True, help="a variant named under `variants` in params.yaml")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_entry(main, build_parser()))
