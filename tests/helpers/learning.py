"""Train a tiny variant on the fixed ramp problem and score it on held-out ramps.

Shared by the precision-parity tests on CPU (tests/integration/test_learning.py) and on CUDA
(tests/integration/test_gpu.py): same problem, same budget, same scores, another device.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from helpers.train import synthetic_loader, tiny_variant
from inpnet.evaluate.metrics import hole_psnr, mean_colour_fill
from inpnet.models.composite import composite

BUDGET = {"inpnet_tiny": 400, "mae_tiny": 400, "cmgan_tiny": 250}


def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    """32 ramps the training stream never yields (seed 99) and a central 16x16 hole."""
    image = next(synthetic_loader(Path("."), image_size=32, batch_size=32, seed=99))["image"]
    mask = torch.zeros(32, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    return image, mask


def train_and_score(out: Path, name: str, precision: str, *, device: str = "cpu", **train: Any) -> dict[str, float]:
    """Hole PSNR of the model and of a flat fill, and how well the fill follows the image."""
    from inpnet.train.checkpoint import load_model
    from inpnet.train.trainer import train as run

    settings: dict[str, Any] = {
        "max_steps": BUDGET[name],
        "lr": 2e-3,
        "warmup_steps": 5,
        "batch_size": 8,
        "precision": precision,
        "log_every": 1000,
        "sample_every": 10**6,
        "checkpoint_every": 10**6,
        **train,
    }
    v = tiny_variant(name, **settings)
    ckpt = run(
        v, shards=out / "shards", out_dir=out, device=device, loader_factory=partial(synthetic_loader, batches=50)
    )
    model, _ = load_model(ckpt)
    image, mask = held_out()
    model = model.to(device)
    with torch.no_grad():
        pred = model(image.to(device), mask.to(device)).float().cpu()  # (B, 3, H, W)
    hole_mean = lambda x: (x * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3))  # noqa: E731  (B, 3)
    pairs = torch.stack([hole_mean(pred).flatten(), hole_mean(image).flatten()])
    return {
        "model": float(hole_psnr(composite(image, mask, pred), image, mask).mean()),
        "flat": float(hole_psnr(mean_colour_fill(image, mask), image, mask).mean()),
        "corr": float(torch.corrcoef(pairs)[0, 1]),
    }
