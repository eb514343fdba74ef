"""Stage ``train@<variant>``: train one variant, validated on the val shards and the mask bank."""

from __future__ import annotations

from pathlib import Path

from inpnet.config import Params

__all__ = ["shard_split", "train_variant"]


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
) -> Path:
    """Train ``variant`` and return its checkpoint folder ``<out>/<variant>``.

    Defaults come from ``params``: shards ``<data.shards_dir>/train``, validation on
    ``<data.shards_dir>/val`` with the bank ``masks.out_dir`` every ``train.val_every`` steps
    (``val_required=False`` turns missing val data into a warning), checkpoints under
    ``train.out_dir``, MLflow tracking at ``registry.tracking_uri`` unless ``track`` is off.
    ``resume`` continues from the checkpoint in the output folder, if there is one.

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
    return train(
        resolved,
        shards=split,
        val=val,
        out_dir=Path(out) if out else Path(cfg.out_dir),
        max_steps=max_steps,
        resume=resume,
        tracking=TrackingTarget.from_registry(params.registry, tracking_uri) if track else None,
        device=device,
    )
