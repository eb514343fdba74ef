"""Checkpoints: safetensors weights, the resolved config as JSON, and a weights-only state.

Layout of ``<out>/<variant>/``::

    model.safetensors        live generator weights
    model_ema.safetensors    EMA weights (only when the variant sets ``ema_decay``)
    disc.safetensors         discriminator (adversarial variants only)
    config.json              the ResolvedVariant, so the model is rebuilt exactly
    state.pt                 step, optimisers, scalers, data position, RNG states
                             (tensors and plain containers only: torch.load(weights_only=True))
    meta.json                step, world size, MLflow run id; written last = complete

A checkpoint is written into a temporary sibling directory and renamed into place, so a
crash never leaves a half-written checkpoint under the final name. The previous one is
moved aside first and removed after the rename; if a crash falls between the two renames,
:func:`resolve_checkpoint_dir` finds the previous complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_model as _st_load_model
from safetensors.torch import save_model as _st_save_model
from torch import nn

from inpnet.config import ResolvedVariant
from inpnet.errors import CheckpointError
from inpnet.outputs import output_error

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG_FILE",
    "META_FILE",
    "STATE_FILE",
    "load_model",
    "load_state",
    "load_weights_into",
    "read_meta",
    "read_variant",
    "resolve_checkpoint_dir",
    "save_checkpoint",
    "weights_sha256",
]

CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def _weights_file(name: str) -> str:
    return f"{name}.safetensors"


def save_checkpoint(
    ckpt_dir: Path,
    *,
    variant: ResolvedVariant,
    modules: dict[str, nn.Module],
    state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write a complete checkpoint to ``ckpt_dir`` atomically and return ``ckpt_dir``.

    Args:
        modules: name -> module, saved as ``<name>.safetensors`` ("model", "model_ema", "disc").
        state: trainer state; tensors, numbers, strings and containers of them only.
        meta: small JSON-serialisable facts (step, run id) written as meta.json.
    """
    ckpt_dir = Path(ckpt_dir)
    parent = ckpt_dir.parent
    tmp = parent / f".{ckpt_dir.name}.tmp-{os.getpid()}"
    old = parent / f".{ckpt_dir.name}.old"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, module in modules.items():
            # save_model drops tied duplicates that plain save_file would reject
            _st_save_model(module, str(tmp / _weights_file(name)))
        (tmp / CONFIG_FILE).write_text(json.dumps(variant.model_dump(mode="json"), indent=2, sort_keys=True))
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({**meta, "weights": sorted(modules)}, indent=2, sort_keys=True))
    except OSError as err:  # e.g. disk full: the previous checkpoint stays, no half-written copy
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(ckpt_dir, err, "cannot write the checkpoint") from None
    if old.exists():
        shutil.rmtree(old)
    if ckpt_dir.exists():
        os.rename(ckpt_dir, old)
    os.rename(tmp, ckpt_dir)
    if old.exists():
        shutil.rmtree(old)
    log.info("checkpoint written: %s (step %s)", ckpt_dir, meta.get("step"))
    return ckpt_dir


def resolve_checkpoint_dir(ckpt_dir: Path) -> Path:
    """``ckpt_dir`` if it holds a complete checkpoint, else the previous one left by a crash."""
    ckpt_dir = Path(ckpt_dir)
    if (ckpt_dir / META_FILE).is_file():
        return ckpt_dir
    old = ckpt_dir.parent / f".{ckpt_dir.name}.old"
    if (old / META_FILE).is_file():
        log.warning("%s is incomplete; using the previous checkpoint %s", ckpt_dir, old)
        return old
    raise CheckpointError(
        f"{ckpt_dir}: no complete checkpoint ({META_FILE} missing); train the variant first "
        "(`inpnet train --variant NAME`) or point at a checkpoint directory"
    )


def read_meta(ckpt_dir: Path) -> dict[str, Any]:
    """meta.json of a complete checkpoint (step, world_size, mlflow_run_id, weights)."""
    path = resolve_checkpoint_dir(ckpt_dir) / META_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata: {err}") from None
    return meta


def read_variant(ckpt_dir: Path) -> ResolvedVariant:
    """The ResolvedVariant the checkpoint was trained with."""
    path = resolve_checkpoint_dir(ckpt_dir) / CONFIG_FILE
    try:
        return ResolvedVariant.model_validate_json(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a valid variant config ({err}); was it written by another version?"
        ) from None


def load_state(ckpt_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The trainer state, loaded with ``weights_only=True`` (never unpickles arbitrary objects)."""
    path = resolve_checkpoint_dir(ckpt_dir) / STATE_FILE
    try:
        state: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: trainer state missing; the checkpoint cannot be resumed") from None
    except Exception as err:  # noqa: BLE001 - unpickling errors come in several types
        raise CheckpointError(f"{path}: cannot load trainer state safely: {err}") from None
    return state


def load_weights_into(module: nn.Module, ckpt_dir: Path, name: str, *, device: str | torch.device = "cpu") -> None:
    """Load ``<name>.safetensors`` into ``module`` (strict: every key must match)."""
    path = resolve_checkpoint_dir(ckpt_dir) / _weights_file(name)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file missing from the checkpoint")
    try:
        missing, unexpected = _st_load_model(module, str(path), strict=False, device=str(device))
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise CheckpointError(f"{path}: cannot load into {type(module).__name__}: {err}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match {type(module).__name__}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}; was the config changed after training?"
        )


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict: every entry's name, dtype, shape and bytes, by name.

    It depends on the weights only, not on how they were stored, so a checkpoint, the model
    registered from it and the report of its evaluation can be matched by this hash.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # bytes: bf16 has no numpy dtype
    return digest.hexdigest()


def load_model(
    ckpt_dir: str | Path,
    *,
    ema: bool = True,
    device: str | torch.device = "cpu",
    which: Literal["last", "best"] = "last",
) -> tuple[nn.Module, ResolvedVariant]:
    """Rebuild the model from ``config.json`` and load its weights, in eval mode.

    Args:
        ema: prefer the EMA weights when the checkpoint has them (falls back to live weights).
        which: ``last`` (the weights at the final step) or ``best`` (the eval weights at the
            best validation during training, ``best.safetensors``).
    """
    from inpnet.models.build import build_model

    ckpt_dir = resolve_checkpoint_dir(Path(ckpt_dir))
    variant = read_variant(ckpt_dir)
    model = build_model(variant.model, pretrained=False)  # weights come from the checkpoint
    if which == "best":
        if not (ckpt_dir / _weights_file("best")).is_file():
            raise CheckpointError(
                f"{ckpt_dir}: no best weights (best.safetensors); the run had no validation "
                "(train.val_every: 0 or no val shards)"
            )
        load_weights_into(model, ckpt_dir, "best", device="cpu")
        return model.to(device).eval(), variant
    name = "model_ema" if ema and (ckpt_dir / _weights_file("model_ema")).is_file() else "model"
    load_weights_into(model, ckpt_dir, name, device="cpu")
    return model.to(device).eval(), variant
