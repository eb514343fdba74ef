"""What a variant costs to train, and training budgets in images or FLOPs instead of steps.

:func:`training_cost` measures a variant's parameter count and its training FLOPs per image
with :class:`torch.utils.flop_counter.FlopCounterMode`, on one optimiser step of the
variant's own step object (:func:`inpnet.train.steps.build_step`), in fp32 at
``model.img_size``, over :data:`IMAGES` images with masks from the variant's training mixture,
divided by the number of images. What counts:

- matrix products, convolutions and attention, forward and backward (FlopCounterMode's
  formulas; element-wise work such as normalisation, activations, the losses and the
  optimiser's update is not counted, as usual for FLOP figures);
- reconstruction variants: the model's forward and backward;
- adversarial variants (``train.loss.adv_weight > 0``, CM-GAN): also the discriminator step
  (a generator forward without gradients, the discriminator on the real image and the fake
  composite, its backward) and the adversarial term through the discriminator in the
  generator step; lazy R1 (every ``r1_every`` steps) amortised over ``r1_every``.

MAE's encoder sees only the visible patches, so its count depends on the masks: they are the
variant's own training masks at the end of the ratio warm-up, from a fixed seed. Object-shaped
holes (``train.masks.object_dir``) are replaced by the mixture's for the count.

A measurement takes one or two optimiser steps; it is cached per (variant, device) in the
process, and evaluation reports carry it, so ``inpnet compare`` reads it instead of measuring.

:func:`planned_steps` turns ``train.budget_images`` or ``train.budget_flops`` into the step
count the trainer runs: ``ceil(budget / global batch)`` or ``ceil(budget / (FLOPs per image x
global batch))``, with global batch = ``batch_size x grad_accum x`` world size.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from inpnet.config import ResolvedVariant

__all__ = ["IMAGES", "TrainingCost", "global_batch", "planned_steps", "training_cost"]

log = logging.getLogger(__name__)

IMAGES = 4  # images of the counted step
COUNTED = (
    "FlopCounterMode FLOPs (matmul, conv, attention; forward + backward) of one fp32 optimiser step of the "
    "variant's training step at model.img_size, per image; adversarial variants include the discriminator "
    "step and the adversarial term, lazy R1 amortised"
)


@dataclass(frozen=True)
class TrainingCost:
    """A variant's size and training compute (see the module docstring for what counts)."""

    params: int  # the model's parameters (the generator of a GAN): what inference runs
    disc_params: int  # the discriminator's, 0 without one
    flops_per_image: float  # training FLOPs per image of one optimiser step
    image_size: int
    counted: str = COUNTED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_cost(variant: ResolvedVariant, *, device: str | torch.device = "cpu") -> TrainingCost:
    """Parameters and training FLOPs per image of ``variant``, measured once per process and device."""
    return _cached_cost(variant.model_dump_json(), str(torch.device(device)))


@functools.lru_cache(maxsize=32)
def _cached_cost(variant_json: str, device: str) -> TrainingCost:
    return _measure(ResolvedVariant.model_validate_json(variant_json), torch.device(device))


def _measure(variant: ResolvedVariant, device: torch.device) -> TrainingCost:
    from torch.utils.flop_counter import FlopCounterMode

    from inpnet.models.build import build_model
    from inpnet.train.distributed import DistInfo
    from inpnet.train.optim import resolve_precision
    from inpnet.train.steps import build_step

    # the plain path: fp32, no compile, no accumulation, no EMA (none of them changes the count)
    train = variant.train.model_copy(update={"precision": "fp32", "compile": False, "grad_accum": 1})
    v = variant.model_copy(update={"train": train})
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    size = v.model.img_size
    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left where it was
        torch.manual_seed(0)
        model = build_model(v.model, pretrained=False).to(device)
        step = build_step(v, model, model, resolve_precision("fp32", device), info)
        image = torch.rand(IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        mask = _training_masks(v, size).to(device)

        def count(at: int) -> int:
            with FlopCounterMode(display=False) as counter:
                step([(image, mask)], at)
            return int(counter.get_total_flops())

        loss = v.train.loss
        flops = float(count(1))  # step 1: no lazy R1 (it runs at multiples of r1_every)
        if loss.adv_weight > 0 and loss.r1_gamma > 0 and loss.r1_every > 1:
            flops += (count(0) - flops) / loss.r1_every
    disc = step.modules.get("disc")
    return TrainingCost(
        params=sum(p.numel() for p in model.parameters()),
        disc_params=sum(p.numel() for p in disc.parameters()) if disc is not None else 0,
        flops_per_image=flops / IMAGES,
        image_size=size,
    )


def _training_masks(variant: ResolvedVariant, size: int) -> torch.Tensor:
    """(IMAGES, 1, size, size) masks of the variant's mixture at the end of its ratio warm-up, seed 0."""
    from inpnet.masks import MaskMixture

    cfg = variant.train.masks
    mixture = MaskMixture(cfg, seed=0)
    keys = [str(i) for i in range(IMAGES)]  # the fixed-mask ablation draws by key
    masks: torch.Tensor = mixture.sample(
        IMAGES, size, size, step=cfg.warmup_steps, generator=np.random.default_rng(0), keys=keys
    )
    return masks


# ----------------------------------------------------------------------------- budgets


def global_batch(variant: ResolvedVariant, world_size: int) -> int:
    """Images per optimiser step over the whole job."""
    return variant.train.batch_size * variant.train.grad_accum * max(world_size, 1)


def planned_steps(variant: ResolvedVariant, world_size: int, *, device: str | torch.device = "cpu") -> tuple[int, str]:
    """The optimiser steps ``variant`` trains for, and how they were derived (for the logs).

    ``train.max_steps`` as given, or derived from ``train.budget_images`` or
    ``train.budget_flops`` (the FLOPs per image measured by :func:`training_cost` on ``device``).
    """
    cfg = variant.train
    batch = global_batch(variant, world_size)
    if cfg.max_steps is not None:
        return cfg.max_steps, f"train.max_steps {cfg.max_steps}"
    if cfg.budget_images is not None:
        steps = max(1, math.ceil(cfg.budget_images / batch))
        return steps, f"train.budget_images {cfg.budget_images} / global batch {batch} = {steps} steps"
    assert cfg.budget_flops is not None  # TrainConfig holds exactly one of the three
    per_image = training_cost(variant, device=device).flops_per_image
    steps = max(1, math.ceil(cfg.budget_flops / (per_image * batch)))
    return steps, (
        f"train.budget_flops {cfg.budget_flops:.4g} / ({per_image:.4g} FLOPs per image x global batch {batch}) "
        f"= {steps} steps"
    )
