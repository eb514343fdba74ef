"""`inpnet train`: train one variant on the training shards with the shared trainer.

For DDP run the console script under torchrun: ``torchrun --nproc_per_node N --no-python
inpnet train --variant NAME`` (add ``--nnodes``/``--rdzv-endpoint`` for several machines).
Every rank parses the same params; only rank 0 writes checkpoints and MLflow records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from inpnet.cli.app import PARAMS_HELP, app


def _shard_split(shards: Path) -> Path:
    """Accept the split folder itself (with manifest.json) or the shards root holding ``train/``."""
    if (shards / "manifest.json").is_file() or not (shards / "train" / "manifest.json").is_file():
        return shards
    return shards / "train"


@app.command("train")
def train_command(
    variant: str = typer.Option(..., "--variant", help="Variant name from params.yaml (e.g. inpnet_s, mae_s, cmgan_s)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Override train.max_steps (also the cosine schedule's length)."),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue from the checkpoint in --out exactly where it stopped (fresh start if there is none).",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Checkpoint root; the checkpoint goes to OUT/<variant>/ (default: train.out_dir)."),
    shards: Optional[Path] = typer.Option(
        None, "--shards",
        help="Training shards: a split folder with manifest.json, or the shards root holding train/ (default: "
        "<data.shards_dir>/train).",
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="Do not track the run in MLflow."),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else registry.tracking_uri in params).",
    ),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    val_shards: Optional[Path] = typer.Option(
        None, "--val-shards",
        help="Val shard folder scored every train.val_every steps (default: <data.shards_dir>/val; validation is off "
        "with a warning when it does not exist).",
    ),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Evaluation mask bank paired with the val images (default: masks.out_dir)."),
) -> None:
    """Train VARIANT and write its checkpoint (safetensors + config + resumable state)."""
    from inpnet.config import TrackingConfig, load_params, resolve_tracking_uri
    from inpnet.errors import DataError
    from inpnet.train.trainer import train
    from inpnet.train.validation import open_val_set

    p = load_params(params)
    resolved = p.variant(variant)
    split = _shard_split(Path(shards) if shards else Path(p.data.shards_dir) / "train")
    if not split.is_dir():
        raise DataError(f"{split}: training shards not found; run `inpnet data shard` first or pass --shards")
    tracking = None
    if not no_mlflow:
        uri = resolve_tracking_uri(p.registry, tracking_uri)
        tracking = TrackingConfig(tracking_uri=uri, experiment=p.registry.experiment)
    val = open_val_set(val_shards or Path(p.data.shards_dir) / "val", masks or Path(p.masks.out_dir),
                       image_size=resolved.train.image_size, count=resolved.train.val_images,
                       every=resolved.train.val_every, required=val_shards is not None or masks is not None)
    ckpt_dir = train(
        resolved,
        shards=split,
        val=val,
        out_dir=Path(out) if out else Path(resolved.train.out_dir),
        max_steps=max_steps,
        resume=resume,
        tracking=tracking,
        device=device,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"checkpoint: {ckpt_dir}")
