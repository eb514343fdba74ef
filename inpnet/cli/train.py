"""`inpnet train`: train one variant on the training shards with the shared trainer.

For DDP run the console script under torchrun: ``torchrun --nproc_per_node N --no-python
inpnet train --variant NAME`` (add ``--nnodes``/``--rdzv-endpoint`` for several machines).
Every rank parses the same params; only rank 0 writes checkpoints and MLflow records.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from inpnet.cli.app import PARAMS_HELP, app


@app.command("train")
def train_command(
    variant: str = typer.Option(
        ..., "--variant", help="Variant name from params.yaml (e.g. inpnet_s, mae_s, cmgan_s)."
    ),
    max_steps: int | None = typer.Option(
        None, "--max-steps", min=1, help="Override train.max_steps (also the cosine schedule's length)."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue from the checkpoint in --out exactly where it stopped (fresh start if there is none).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Checkpoint root; the checkpoint goes to OUT/<variant>/ (default: train.out_dir)."
    ),
    shards: str | None = typer.Option(
        None,
        "--shards",
        help="Training shards: a split folder with manifest.json, the shards root holding train/, or a URL on "
        "object storage that every rank reads (s3://bucket/shards/train, with the shard stage's manifest.json "
        "beside the shards; also .../train-{000000..000011}.tar, https://..., pipe:CMD) (default: "
        "<data.shards_dir>/train).",
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not track the run in MLflow."),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else registry.tracking_uri in params).",
    ),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    val_shards: Path | None = typer.Option(
        None,
        "--val-shards",
        help="Val shard folder scored every train.val_every steps (default: <data.shards_dir>/val; validation is off "
        "with a warning when it does not exist).",
    ),
    masks: Path | None = typer.Option(
        None, "--masks", help="Evaluation mask bank paired with the val images (default: masks.out_dir)."
    ),
) -> None:
    """Train VARIANT and write its checkpoint (safetensors + config + resumable state)."""
    from inpnet.config import load_params
    from inpnet.data.urls import is_url
    from inpnet.stages.train import train_variant

    ckpt_dir = train_variant(
        load_params(params),
        variant,
        shards=shards if shards is None or is_url(shards) else Path(shards),
        val_shards=val_shards,
        masks=masks,
        val_required=val_shards is not None or masks is not None,
        out=out,
        max_steps=max_steps,
        resume=resume,
        track=not no_mlflow,
        tracking_uri=tracking_uri,
        device=device,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"checkpoint: {ckpt_dir}")
