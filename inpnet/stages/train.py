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

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from inpnet.config import Params, ResolvedVariant

__all__ = ["inputs_record", "shard_split", "train_variant"]

log = logging.getLogger(__name__)


def shard_split(shards: Path) -> Path:
    """Accept the split folder itself (with manifest.json) or the shards root holding ``train/``."""
    if (shards / "manifest.json").is_file() or not (shards / "train" / "manifest.json").is_file():
        return shards
    return shards / "train"


def train_variant(
    params: Params,
    variant: str,
    *,
    shards: Path | None = None,
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

    Defaults come from ``params``: shards ``<data.shards_dir>/train``, validation on
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
    cfg = resolved.train
    split = shard_split(Path(shards) if shards else Path(params.data.shards_dir) / "train")
    if not split.is_dir():
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
        inputs = inputs_record(
            resolved, split, val_shards or Path(params.data.shards_dir) / "val", masks or Path(params.masks.out_dir)
        )
        _keep_only_same_inputs(out_dir / resolved.name, inputs)
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


def _manifest_sha256(folder: Path) -> str | None:
    path = Path(folder) / "manifest.json"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def inputs_record(variant: ResolvedVariant, shards: Path, val_shards: Path, masks: Path) -> dict[str, Any]:
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
