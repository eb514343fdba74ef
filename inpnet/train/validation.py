"""Validation during training: a fixed val subset scored every ``train.val_every`` steps.

The subset is the first ``train.val_images`` images of the val shards (centre crops at
the training size, in manifest order), each paired with a mask of the evaluation bank:
image ``i`` takes cell ``i % n_cells`` (cells sorted by pattern and ratio) and mask
``i // n_cells`` of that cell, so the subset spreads over every pattern and ratio. It is
built once per run, so every validation of the run, and of a resumed run, sees identical
pairs. Scores are those of the evaluator, on the 8-bit composite: hole PSNR (what the
model contributes), full-image SSIM, and the flat mean-colour fill's hole PSNR as the floor
a model that learned anything must clear.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from inpnet.errors import DataError
from inpnet.evaluate.metrics import hole_psnr, mean_colour_fill, quantize, ssim
from inpnet.models.composite import composite
from inpnet.train.optim import Precision

log = logging.getLogger(__name__)

__all__ = ["ValSet", "open_val_set"]


@dataclass(frozen=True)
class ValSet:
    """Fixed val pairs: images (N, 3, S, S) in [0, 1], masks (N, 1, S, S), 1 = hole."""

    images: torch.Tensor
    masks: torch.Tensor
    flat_hole_psnr: float  # the flat mean-colour fill on the same pairs

    @classmethod
    def from_dirs(cls, shards: str | Path, bank: str | Path, *, image_size: int, count: int) -> ValSet:
        """Read ``count`` pairs from a val shard folder and an evaluation mask bank.

        Raises:
            DataError: the shards or the bank are missing or hold no usable pair.
        """
        from inpnet.data.loader import iter_eval_images
        from inpnet.evaluate.sources import BankMasks
        from inpnet.images import read_mask_png

        shards, bank = Path(shards), Path(bank)
        if not (shards / "manifest.json").is_file():
            raise DataError(
                f"{shards}: no val shards (manifest.json missing) for validation during training; "
                "run `inpnet data shard --split val` or set train.val_every: 0"
            )
        ordered = list(BankMasks(bank).cells.values())  # the evaluator's cells: by (pattern, ratio), masks by index
        images, masks = [], []
        for i, (_, image) in enumerate(iter_eval_images(shards, image_size=image_size)):
            if i == count:
                break
            cell = ordered[i % len(ordered)]
            entry = cell[(i // len(ordered)) % len(cell)]
            hole = torch.from_numpy(read_mask_png(entry.path, size=image_size))  # (S, S) bool
            if not 0 < float(hole.float().mean()) < 1:
                continue  # an empty or full hole scores nothing
            images.append(image)
            masks.append(hole[None].float())
        if not images:
            raise DataError(f"{shards}: no val image could be paired with a mask of {bank}")
        image_t, mask_t = torch.stack(images), torch.stack(masks)  # (N, 3, S, S), (N, 1, S, S)
        flat = float(hole_psnr(quantize(mean_colour_fill(image_t, mask_t)), image_t, mask_t).mean())
        log.info(
            "validation: %d val pairs from %s and %s (flat fill %.2f dB in the hole)", len(images), shards, bank, flat
        )
        return cls(image_t, mask_t, flat)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @torch.no_grad()
    def score(
        self, model: nn.Module, precision: Precision, *, batch_size: int, device: torch.device
    ) -> dict[str, float]:
        """Hole PSNR, SSIM (means over the pairs) and the flat fill's hole PSNR; model mode restored."""
        was_training = model.training
        model.eval()
        psnrs, ssims = [], []
        try:
            for start in range(0, len(self), batch_size):
                image = self.images[start : start + batch_size].to(device)
                mask = self.masks[start : start + batch_size].to(device)
                with precision.autocast():
                    pred = model(image, mask)
                out = quantize(composite(image, mask, pred.float()))  # what a saved PNG holds
                psnrs.append(hole_psnr(out, image, mask).cpu())
                ssims.append(ssim(out, image).cpu())
        finally:
            model.train(was_training)
        return {
            "hole_psnr": float(torch.cat(psnrs).mean()),
            "ssim": float(torch.cat(ssims).mean()),
            "flat_hole_psnr": self.flat_hole_psnr,
        }


def open_val_set(
    shards: str | Path, bank: str | Path, *, image_size: int, count: int, every: int, required: bool = True
) -> ValSet | None:
    """The run's val pairs, or None when ``every`` is 0 (``train.val_every``).

    ``required=False`` (the CLI's default folders): missing val shards or bank turn
    validation off with a warning instead of an error.
    """
    if every <= 0:
        return None
    if not required and not ((Path(shards) / "manifest.json").is_file() and Path(bank).is_dir()):
        log.warning(
            "validation during training is off: no val shards in %s or no mask bank in %s "
            "(build them, or pass --val-shards/--masks)",
            shards,
            bank,
        )
        return None
    return ValSet.from_dirs(shards, bank, image_size=image_size, count=count)
