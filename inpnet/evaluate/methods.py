"""What ``inpnet evaluate --method`` accepts, turned into one callable interface.

A method spec is one of:

- ``telea``, ``navier_stokes``, ``biharmonic``: the classical baselines
  (:mod:`inpnet.evaluate.baselines`);
- a trained checkpoint folder (``models/<variant>/``), loaded with
  :func:`inpnet.train.checkpoint.load_model`: the last weights (EMA when present), never
  the best-on-validation ones, which were chosen on val images;
- a registry URI ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``), loaded with
  :func:`inpnet.inpaint.load_inpainter`.

Every method answers ``method(image (B,3,H,W), mask (B,1,H,W)) -> prediction (B,3,H,W)``;
the evaluator composites and quantises the prediction, never the method.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from inpnet.errors import ConfigError
from inpnet.evaluate.baselines import BASELINES, BaselineInpainter

if TYPE_CHECKING:
    import torch

__all__ = ["Method", "ModelMethod", "resolve_method"]

log = logging.getLogger(__name__)


class Method(Protocol):
    """The evaluator's view of an inpainting method."""

    name: str
    image_size: int | None  # the one input size the method accepts, None = any

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...

    def settings(self) -> dict[str, object]: ...

    def close(self) -> None: ...


class ModelMethod:
    """A trained network (or a registry model) as a :class:`Method`, run without gradients.

    Args:
        name: shown in reports (the variant or the registry URI).
        model: callable ``(image, mask) -> prediction`` on ``device``.
        device: where inputs are moved before the call; outputs come back as float32 on CPU.
        image_size: the size the model was built for, or None if any size works.
        info: extra facts for the report (variant, family, registry version, ...).
    """

    def __init__(
        self,
        name: str,
        model: Callable[..., Any],
        *,
        device: str = "cpu",
        image_size: int | None = None,
        info: dict[str, object] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.device = device
        self.image_size = image_size
        self.info = dict(info or {})

    def settings(self) -> dict[str, object]:
        return {"kind": "model", "device": self.device, "image_size": self.image_size, **self.info}

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode():
            pred = self.model(image.to(self.device), mask.to(self.device))
        if not isinstance(pred, torch.Tensor):
            pred = torch.as_tensor(pred)
        return pred.float().cpu()

    def close(self) -> None:
        pass


def resolve_method(spec: str, device: str = "cpu", *, radius: int = 3, workers: int = 1) -> Method:
    """Turn a ``--method`` value into a :class:`Method`.

    Args:
        spec: a baseline name, a checkpoint folder, or ``models:/NAME@ALIAS``.
        device: torch device for models (baselines always run on CPU).
        radius: OpenCV inpainting radius for ``telea`` / ``navier_stokes``.
        workers: concurrent images for the baselines.
    """
    if spec in BASELINES:
        return BaselineInpainter(spec, radius=radius, workers=workers)
    if spec.startswith("models:/"):
        return _registry_method(spec, device)
    path = Path(spec)
    if path.is_dir():
        return _checkpoint_method(path, device)
    raise ConfigError(
        f"--method {spec!r}: not a baseline ({', '.join(BASELINES)}), not an existing checkpoint folder, "
        "and not a registry URI models:/NAME@ALIAS"
    )


def _checkpoint_method(path: Path, device: str) -> Method:
    from inpnet.masks.mixture import describe_training_masks
    from inpnet.models.build import inference_settings
    from inpnet.train.checkpoint import load_model, read_meta, weights_sha256
    from inpnet.train.cost import global_batch, training_cost

    model, variant = load_model(path, ema=True, device=device)
    meta = read_meta(path)
    steps, world = int(meta.get("step", 0)), int(meta.get("world_size", 1))
    # the weights' hash lets `inpnet register` check that a report scored this very checkpoint
    info: dict[str, object] = {
        "checkpoint": str(path),
        "variant": variant.name,
        "family": variant.model.family,
        "weights_sha256": weights_sha256(model),
        # the last weights, not best.safetensors: the best were picked on val images, which
        # in the quickstart are the evaluation images too, so they would flatter the model
        "weights": "last (EMA when the variant has one)",
        **inference_settings(variant.model),  # e.g. CM-GAN's latent, the input view
        # bf16 or fp32 (train.precision auto picks by CPU): the summary's Machine line says it
        "trained_precision": meta.get("precision", "unknown"),
        # for the compare report: seed runs of one variant, what made its training masks, what it cost
        "train_seed": variant.train.seed,
        "train_masks": describe_training_masks(variant.train),
        "training": {
            "steps": steps,
            "world_size": world,
            "global_batch": global_batch(variant, world),
            "images": steps * global_batch(variant, world),
        },
        "cost": training_cost(variant, device=device).as_dict(),
        # what the run's recipe did (effective lr; perceptual loss and object masks on or off, and why)
        "recipe": meta.get("notes", {}),
    }
    prefill = getattr(variant.model, "prefill", "none")
    if prefill != "none":  # the classical fill the network corrects: the compare report sets them side by side
        info["prefill"] = prefill
    return ModelMethod(variant.name, model, device=device, image_size=variant.model.img_size, info=info)


def _registry_method(uri: str, device: str) -> Method:
    from inpnet.inpaint import load_inpainter
    from inpnet.train.checkpoint import weights_sha256

    model, info = load_inpainter(uri, device=device)
    facts = {k: v for k, v in dict(info or {}).items() if isinstance(v, (str, int, float, bool)) or v is None}
    facts["weights_sha256"] = weights_sha256(model.model)  # the network inside the tiling Inpainter
    # the registry's Inpainter tiles any image size onto the model's grid, so no size constraint
    return ModelMethod(uri, model, device=device, image_size=None, info={"registry_uri": uri, **facts})
