"""Stage ``train@<variant>``: train one variant, validated on the val shards and the mask bank.

Under DVC the checkpoint folder is a ``persist`` output, so this module decides whether a
checkpoint found there is continued or thrown away (``fresh_on_change``): it is continued
only when it is unfinished and was trained on the same inputs, i.e. the resolved variant
(every model and train setting) and the same training shards, val shards and mask bank
(by their manifests' SHA-256). Those inputs are recorded in ``<out>/.<variant>.inputs.json``
before training starts. A finished checkpoint is always retrained: DVC runs the stage
again only when its code, params or data changed. Code is not part of the record, so a
fix made after a crash still continues the run.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from inpnet.config import Params, ResolvedVariant, TrainConfig

__all__ = ["inputs_record", "prepare_checkpoint", "shard_split", "torchrun_command", "train_variant", "world_size"]

log = logging.getLogger(__name__)


def shard_split(shards: Path) -> Path:
    """Accept the split folder itself (with manifest.json) or the shards root holding ``train/``."""
    if (shards / "manifest.json").is_file() or not (shards / "train" / "manifest.json").is_file():
        return shards
    return shards / "train"


def training_shards(params: Params, shards: str | Path | None) -> str | Path:
    """The training shards to read: a URL spec (``s3://bucket/shards/train``, a ``str``) as
    given, else the split folder :func:`shard_split` finds (default ``<data.shards_dir>/train``)."""
    from inpnet.data.urls import is_url

    if isinstance(shards, str) and is_url(shards):
        return shards
    return shard_split(Path(shards) if shards else Path(params.data.shards_dir) / "train")


def train_variant(
    params: Params,
    variant: str,
    *,
    shards: str | Path | None = None,
    val_shards: Path | None = None,
    masks: Path | None = None,
    val_required: bool = True,
    out: Path | None = None,
    max_steps: int | None = None,
    resume: bool = True,
    track: bool = True,
    tracking_uri: str | None = None,
    device: str | None = None,
    fresh_on_change: bool = False,
) -> Path:
    """Train ``variant`` and return its checkpoint folder ``<out>/<variant>``.

    Defaults come from ``params``: shards ``<data.shards_dir>/train`` (or a URL spec ``str``
    on object storage, read by every rank: :func:`training_shards`), validation on
    ``<data.shards_dir>/val`` with the bank ``masks.out_dir`` every ``train.val_every`` steps
    (``val_required=False`` turns missing val data into a warning), checkpoints under
    ``train.out_dir``, MLflow tracking at ``registry.tracking_uri`` unless ``track`` is off.
    ``resume`` continues from the checkpoint in the output folder, if there is one;
    ``fresh_on_change`` (the pipeline) first deletes that checkpoint when it is finished or
    its recorded inputs differ from this run's (see the module docstring).

    Raises:
        ConfigError: ``variant`` is not defined.
        DataError: the training shards (or required val data) are missing.
    """
    from inpnet.errors import DataError
    from inpnet.registry.tracking import TrackingTarget
    from inpnet.train.trainer import train
    from inpnet.train.validation import open_val_set

    resolved = params.variant(variant).check_sizes()
    params.check_shard_size(variant)  # a crop larger than the shards' images would be upsampled
    cfg = resolved.train
    split = training_shards(params, shards)
    if isinstance(split, Path) and not split.is_dir():
        raise DataError(f"{split}: training shards not found; run `inpnet data shard` first or pass --shards")
    val = open_val_set(
        val_shards or Path(params.data.shards_dir) / "val",
        masks or Path(params.masks.out_dir),
        image_size=cfg.image_size,
        count=cfg.val_images,
        every=cfg.val_every,
        required=val_required,
    )
    out_dir = Path(out) if out else Path(cfg.out_dir)
    if fresh_on_change:
        prepare_checkpoint(params, variant, shards=shards, val_shards=val_shards, masks=masks, out=out)
    return train(
        resolved,
        shards=split,
        val=val,
        out_dir=out_dir,
        max_steps=max_steps,
        resume=resume,
        tracking=TrackingTarget.from_registry(params.registry, tracking_uri) if track else None,
        device=device,
    )


def prepare_checkpoint(
    params: Params,
    variant: str,
    *,
    shards: str | Path | None = None,
    val_shards: Path | None = None,
    masks: Path | None = None,
    out: Path | None = None,
) -> Path:
    """Keep the checkpoint of ``variant`` only if it can be continued (see the module docstring),
    record this run's inputs beside it, and return the checkpoint folder ``<out>/<variant>``.

    Called once per run, before training (by :func:`train_variant` with ``fresh_on_change``, or
    by the launcher before ``torchrun`` starts the ranks). Defaults are those of :func:`train_variant`.
    """
    resolved = params.variant(variant)
    ckpt_dir = (Path(out) if out else Path(resolved.train.out_dir)) / resolved.name
    inputs = inputs_record(
        resolved,
        training_shards(params, shards),
        Path(val_shards) if val_shards else Path(params.data.shards_dir) / "val",
        Path(masks) if masks else Path(params.masks.out_dir),
    )
    _keep_only_same_inputs(ckpt_dir, inputs)
    return ckpt_dir


def world_size(cfg: TrainConfig) -> int:
    """Processes in the job the train settings ask for (``nproc_per_node`` x ``nnodes``)."""
    return cfg.nproc_per_node * cfg.nnodes


def torchrun_command(cfg: TrainConfig, entry: list[str]) -> list[str]:
    """``python -m torch.distributed.run`` with the settings of ``cfg``, running ``entry`` per rank.

    One node: ``--standalone`` (a local rendezvous on a free port). Several: the c10d (or
    ``rdzv_backend``) rendezvous at ``rdzv_endpoint`` with job id ``rdzv_id``; each node runs
    the same command. ``entry`` is what follows, e.g. ``["-m", "pipelines.train", ...]``.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={cfg.nproc_per_node}"]
    if cfg.nnodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [
            f"--nnodes={cfg.nnodes}",
            f"--rdzv-backend={cfg.rdzv_backend}",
            f"--rdzv-endpoint={cfg.rdzv_endpoint}",
            f"--rdzv-id={cfg.rdzv_id}",
        ]
    return [*cmd, *entry]


def _manifest_sha256(shards: str | Path) -> str | None:
    from inpnet.registry.tracking import manifest_sha256, shards_manifest

    manifest = shards_manifest(shards)
    return manifest_sha256(manifest) if manifest else None


def inputs_record(variant: ResolvedVariant, shards: str | Path, val_shards: Path, masks: Path) -> dict[str, Any]:
    """What a checkpoint of ``variant`` is trained on: the resolved config and the data manifests."""
    return {
        "variant": variant.model_dump(mode="json"),
        "train_shards": _manifest_sha256(shards),
        "val_shards": _manifest_sha256(val_shards),
        "masks": _manifest_sha256(masks),
    }


def _inputs_path(ckpt_dir: Path) -> Path:
    return ckpt_dir.parent / f".{ckpt_dir.name}.inputs.json"  # beside: the folder is replaced by each save


def _why_not_resumable(ckpt_dir: Path, inputs: dict[str, Any]) -> str | None:
    """Why the checkpoint in ``ckpt_dir`` must not be continued by a run on ``inputs``, else None."""
    from inpnet.errors import CheckpointError
    from inpnet.train.checkpoint import read_meta

    try:
        meta = read_meta(ckpt_dir)
    except CheckpointError:
        return None  # nothing complete to continue: the trainer starts from step 0 anyway
    if meta.get("finished"):
        return f"it is finished (step {meta.get('step')}) and the stage runs again because its inputs changed"
    try:
        recorded = json.loads(_inputs_path(ckpt_dir).read_text())
    except (OSError, json.JSONDecodeError):
        return f"{_inputs_path(ckpt_dir)} (what it was trained on) is missing or unreadable"
    changed = sorted(key for key in inputs if recorded.get(key) != inputs[key])
    return f"it was trained with other {', '.join(changed)}" if changed else None


def _keep_only_same_inputs(ckpt_dir: Path, inputs: dict[str, Any]) -> None:
    """Delete the checkpoint in ``ckpt_dir`` unless it can be continued; record ``inputs``."""
    from inpnet.outputs import FolderLock, write_atomic

    with FolderLock(ckpt_dir):  # no other run may be writing the checkpoint we decide about
        reason = _why_not_resumable(ckpt_dir, inputs)
        if reason is not None:
            log.warning("%s: starting from step 0, not resuming: %s", ckpt_dir, reason)
            for stale in (ckpt_dir, ckpt_dir.parent / f".{ckpt_dir.name}.old"):
                shutil.rmtree(stale, ignore_errors=True)
        ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_inputs_path(ckpt_dir), (json.dumps(inputs, indent=2, sort_keys=True) + "\n").encode())
