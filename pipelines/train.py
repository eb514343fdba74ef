"""DVC stage ``train@<variant>``: train one variant on the training shards.

The task retries once and resumes from the last checkpoint, so a crash (or a killed
``dvc repro``: the folder is a ``persist`` output) costs at most ``train.checkpoint_every``
steps. A finished checkpoint, or one trained on other params or data, is not continued:
the stage starts from step 0 (:func:`inpnet.stages.train.prepare_checkpoint`). Every
``train.val_every`` steps the run scores a fixed subset of the val shards with the
evaluation mask bank (both are stage deps). MLflow tracks the run at ``registry.tracking_uri``
(or ``$MLFLOW_TRACKING_URI``).

With ``train.nproc_per_node`` x ``train.nnodes`` above 1 the task launches ``torchrun`` as a
child process (``python -m torch.distributed.run ... -m pipelines.train --rank``); each
rank runs the same trainer, which lets only rank 0 write checkpoints and MLflow records.
A failed torchrun fails the task, and Prefect retries it (from the checkpoint). A training
stopped by SIGTERM (:class:`~inpnet.errors.TrainingInterrupted`: the user or a scheduler asked
it to stop, after it saved a checkpoint) is not retried: the stage fails, and the next
``dvc repro`` continues from that checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State

from inpnet.config import Params, load_params
from inpnet.errors import InpnetError, TrainingInterrupted
from inpnet.stages.train import prepare_checkpoint, torchrun_command, train_variant, world_size
from pipelines.common import base_parser, run_entry

log = logging.getLogger(__name__)


def _torchrun(params: Params, variant: str, params_file: str) -> str:
    from prefect.settings import PREFECT_API_URL

    cfg = params.variant(variant).train
    ckpt_dir = prepare_checkpoint(params, variant)  # once, before the ranks start
    cmd = torchrun_command(cfg, ["-m", "pipelines.train", "--params", params_file, "--variant", variant, "--rank"])
    env = dict(os.environ)
    if PREFECT_API_URL.value():  # the ranks run no flow; they must not start or lease a Prefect server
        env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    log.info("training %s on %d processes: %s", variant, world_size(cfg), " ".join(cmd))
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code != 0:
        raise InpnetError(f"torchrun for {variant} exited {code} (the ranks' errors are above); the retry resumes")
    return str(ckpt_dir)


def retry_unless_stopped(_task: object, _task_run: object, state: State) -> bool:
    """Prefect's retry condition: retry a crash, not a run that was told to stop."""
    return not isinstance(state.result(raise_on_failure=False), TrainingInterrupted)


@task(
    name="train-variant",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_stopped,
    cache_policy=NO_CACHE,
)
def train_task(params: Params, variant: str, params_file: str = "params.yaml") -> str:
    # resume: a retry (or a re-run after a kill) continues from the checkpoint, unless it is
    # finished or was trained on other params or data (models/ is a persist output of DVC)
    if world_size(params.variant(variant).train) > 1:
        return _torchrun(params, variant, params_file)
    return str(train_variant(params, variant, resume=True, fresh_on_change=True))


@flow(name="train", log_prints=True)
def train_flow(params: Params, variant: str, params_file: str = "params.yaml") -> str:
    return train_task(params, variant, params_file)


def main(args: argparse.Namespace) -> None:
    params = load_params(args.params)
    params.variant(args.variant)  # unknown variant: a clear ConfigError before Prefect starts
    if args.rank:  # one rank under torchrun: the launcher has prepared the checkpoint folder
        train_variant(params, args.variant, resume=True)
        return
    train_flow(params, args.variant, str(args.params))


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__)
    parser.add_argument("--variant", required=True, help="a variant named under `variants` in params.yaml")
    parser.add_argument(
        "--rank", action="store_true", help="internal: run as one torchrun rank (no Prefect flow, no checkpoint prep)"
    )
    return parser


if __name__ == "__main__":
    raise SystemExit(run_entry(main, build_parser()))
