"""Cheap hole fills a network can start from: the push-pull image pyramid and OpenCV Telea.

A model with ``prefill`` set sees the hole already filled by one of these (from known
pixels only) and predicts a correction to it, so at initialisation it *is* the classical
fill and training can only have to improve on it (InP-Net's ``prefill`` option).

- ``pushpull``: the pull-push pyramid of Gortler et al. (the Lumigraph): known pixels are
  averaged down a 2x pyramid with their coverage as weight, then every level's gaps are
  filled from the bilinearly upsampled coarser level. Smooth, pure torch (any device,
  differentiable, exportable), about the cost of one 3x3 convolution.
- ``telea``: OpenCV's fast-marching inpainting (Telea 2004), per image on the CPU in 8 bits,
  the classical reference of the evaluation; it continues edges into small holes better.

Both read only known pixels: the hole pixels of ``image`` never influence the result.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Prefill", "prefill", "push_pull"]

Prefill = Literal["none", "pushpull", "telea"]


def push_pull(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill where ``known`` is 0 from the known pixels: (B,C,H,W), (B,1,H,W) in {0,1} -> (B,C,H,W).

    Known pixels come back unchanged. An image with no known pixel comes back as 0.5.
    """
    levels: list[tuple[torch.Tensor, torch.Tensor]] = []
    value, weight = image * known, known
    while True:
        levels.append((value, weight))  # value is weight-premultiplied
        if min(value.shape[-2:]) <= 1:
            break
        value = F.avg_pool2d(value, 2, ceil_mode=True)  # (B, C, ceil(H/2), ceil(W/2))
        weight = F.avg_pool2d(weight, 2, ceil_mode=True)
    coarse_value, coarse_weight = levels[-1]
    # the coarsest level: the weighted mean over what is left of the image
    total = coarse_weight.sum(dim=(2, 3), keepdim=True)
    filled = torch.where(
        total > 0, coarse_value.sum(dim=(2, 3), keepdim=True) / total.clamp_min(1e-12), torch.full_like(total, 0.5)
    ).expand_as(coarse_value)
    for value, weight in reversed(levels[:-1]):
        up = F.interpolate(filled, size=value.shape[-2:], mode="bilinear", align_corners=False)
        # where a level has full coverage keep its own mean; partial coverage blends in the coarser fill
        w = weight.clamp(0.0, 1.0)
        own = value / weight.clamp_min(1e-12)
        filled = torch.where(weight > 0, w * own + (1 - w) * up, up)
    return torch.where(known > 0.5, image, filled)


def _telea(image: torch.Tensor, hole: torch.Tensor, radius: int = 3) -> torch.Tensor:
    import cv2

    imgs = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    holes = (hole.detach()[:, 0] > 0.5).cpu().numpy().astype(np.uint8) * 255  # (B, H, W)
    out = np.stack(
        [
            cv2.inpaint(np.ascontiguousarray(i), h, float(radius), cv2.INPAINT_TELEA) if h.any() else i
            for i, h in zip(imgs, holes, strict=True)
        ]
    )  # (B, H, W, 3)
    filled = torch.from_numpy(out).to(image.device).permute(0, 3, 1, 2).to(image.dtype) / 255.0
    return torch.where(hole > 0.5, filled, image)


@torch.no_grad()
def prefill(kind: Prefill, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """The ``kind`` fill of ``image`` (B,3,H,W) where ``hole`` (B,1,H,W) is 1; no gradient."""
    if kind == "pushpull":
        return push_pull(image, 1.0 - hole)
    if kind == "telea":
        return _telea(image, hole)
    raise ValueError(f"prefill must be 'pushpull' or 'telea', got {kind!r}")
