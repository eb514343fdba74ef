"""Loading MAE checkpoints (facebookresearch/mae, timm) from a local file.

Accepted files: ``.pth``/``.pt`` (read with ``torch.load(weights_only=True)``; the official
training checkpoints also hold an ``argparse.Namespace``, allowed explicitly and nothing
else) and ``.safetensors``. The state dict may sit under ``"model"`` or ``"state_dict"``
and carry ``module.`` (DDP) or ``_orig_mod.`` (``torch.compile``) prefixes.

Key map (:data:`KEY_MAP`): :class:`~inpnet.models.mae.MAE` uses the official names, so
encoder and decoder keys map to themselves; the fine-tuning heads (``head.*``,
``fc_norm.*``) are dropped; anything else is reported and dropped. Two kinds load:

- encoder-only (``mae_pretrain_vit_*.pth``, timm ``*.mae``): every encoder key must be
  present; the decoder keeps its fresh initialisation (logged);
- full (``mae_visualize_vit_*.pth`` or a full pre-training checkpoint): all keys.

Position embeddings are copied from the file, never regenerated, so their channel order
is the checkpoint's own. When the file's patch grid differs from the model's, the table
is resampled bicubically (timm ``resample_abs_pos_embed``) with the class-token row kept;
a table stored without that row gets a zero row, as MAE's. A different patch size or
width is refused: it is a different model, not a resize.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from inpnet.errors import CheckpointError
from inpnet.models.blocks import resample_pos_embed

if TYPE_CHECKING:
    from inpnet.models.mae import MAE

__all__ = ["KEY_MAP", "LoadReport", "load_mae_weights", "map_mae_keys", "read_state_dict"]

log = logging.getLogger(__name__)

# (pattern on the checkpoint key, replacement or None = drop); first match wins.
KEY_MAP: tuple[tuple[str, str | None], ...] = (
    (r"^(cls_token|pos_embed|mask_token|decoder_pos_embed)$", r"\1"),
    (r"^patch_embed\.proj\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", r"blocks.\1.\2.\3"),
    (r"^norm\.(weight|bias)$", r"norm.\1"),
    (r"^decoder_(embed|norm|pred)\.(weight|bias)$", r"decoder_\1.\2"),
    (
        r"^decoder_blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$",
        r"decoder_blocks.\1.\2.\3",
    ),
    (r"^(head|fc_norm)\..*$", None),  # fine-tuning classifier, not part of the MAE
)
_PREFIXES = ("module.", "_orig_mod.")
_ENCODER = re.compile(r"^(cls_token|pos_embed|patch_embed\.|blocks\.|norm\.)")


@dataclass
class LoadReport:
    """What :func:`load_mae_weights` did: loaded keys, dropped file keys, resampled tables."""

    loaded: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    encoder_only: bool = False


def read_state_dict(
    path: str | Path, *, what: str = "MAE checkpoint", params_key: str = "model.pretrained"
) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from ``model``/``state_dict``, prefixes stripped.

    ``what`` and ``params_key`` name the file and the params key that gave it, in error messages.
    Never unpickles arbitrary objects: ``.safetensors``, or ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found ({params_key}); give a local .pth or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, or objects outside the allow-list
        raise CheckpointError(f"cannot read {what} {path}: {err}") from err
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path}: expected a state dict of tensors (optionally under 'model'), got {type(obj).__name__}"
        )
    out = {}
    for name, value in obj.items():
        key = name
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def map_mae_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Apply :data:`KEY_MAP`: returns (model-named tensors, dropped file keys)."""
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        for pattern, repl in KEY_MAP:
            if re.match(pattern, key):
                if repl is None:
                    dropped.append(key)
                else:
                    mapped[re.sub(pattern, repl, key)] = value
                break
        else:
            dropped.append(key)
    return mapped, dropped


def _fit_pos_table(name: str, table: torch.Tensor, target: torch.Tensor, model_grid: tuple[int, int]) -> torch.Tensor:
    """Bring a (1, [1+]N, D) table to the model's (1, 1+L, D): add the class row, resample the grid."""
    if table.ndim == 2:
        table = table[None]
    if table.shape[-1] != target.shape[-1]:
        raise CheckpointError(f"{name}: width {table.shape[-1]} in the checkpoint, {target.shape[-1]} in the model")
    n = table.shape[1]
    if math.isqrt(n) ** 2 == n and math.isqrt(n - 1) ** 2 != n - 1:  # stored without the class-token row
        table = torch.cat([torch.zeros_like(table[:, :1]), table], dim=1)
        n += 1
    side = math.isqrt(n - 1)
    if side * side != n - 1:
        raise CheckpointError(f"{name}: {n - 1} position rows do not form a square patch grid")
    return resample_pos_embed(table.float(), model_grid, (side, side), num_prefix_tokens=1).to(target.dtype)


def load_mae_weights(model: MAE, path: str | Path) -> LoadReport:
    """Load an MAE checkpoint into ``model``; returns a report.

    Raises :class:`CheckpointError` when encoder keys are missing, the decoder is only partly
    present, or a tensor's shape cannot be made to fit.
    """
    mapped, dropped = map_mae_keys(read_state_dict(path))
    own = model.state_dict()
    report = LoadReport(dropped=dropped)
    missing_enc = sorted(k for k in own if _ENCODER.match(k) and k not in mapped)
    if missing_enc:
        raise CheckpointError(
            f"{path}: not an MAE/ViT checkpoint for this model; missing encoder keys {missing_enc[:6]}"
        )
    decoder_keys = [k for k in own if not _ENCODER.match(k)]
    present = [k for k in decoder_keys if k in mapped]
    if present and len(present) != len(decoder_keys):
        absent = sorted(set(decoder_keys) - set(present))
        raise CheckpointError(f"{path}: decoder only partly present; missing {absent[:6]} (decoder_depth differs?)")
    report.encoder_only = not present
    grid = model.grid
    for name in ("pos_embed", "decoder_pos_embed"):
        if name in mapped and mapped[name].shape != own[name].shape:
            mapped[name] = _fit_pos_table(name, mapped[name], own[name], grid)
            report.resampled.append(name)
    for key, value in mapped.items():
        if key not in own:
            raise CheckpointError(f"{path}: key {key} has no place in the model (depth differs?)")
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} in the model "
                "(patch_size, embed_dim or mlp_ratio differ)"
            )
    model.load_state_dict(mapped, strict=False)
    report.loaded = sorted(mapped)
    if report.encoder_only:
        log.info("%s: encoder-only MAE checkpoint; the decoder keeps its initialisation", path)
    if dropped:
        log.info("%s: dropped %d keys not used by the MAE: %s", path, len(dropped), dropped[:8])
    if report.resampled:
        log.info("%s: resampled %s to the %dx%d patch grid", path, report.resampled, *grid)
    return report
