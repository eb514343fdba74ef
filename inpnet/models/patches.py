"""Patch bookkeeping shared by the ViT-based models and their losses.

Patches are flattened as in facebookresearch/mae: for a (B, C, H, W) image and patch size
p, token ``i * W/p + j`` holds the pixels of row-block i and column-block j, and its
p*p*C values are ordered (row in patch, column in patch, channel).

For arbitrary pixel masks (1 = hole), a patch holding **any** hole pixel counts as masked:
a patch-level model must never see a hole pixel, and must predict every hole pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inpnet.errors import ShapeError

__all__ = ["grid_of", "pad_to_multiple", "patch_mask", "patchify", "unpatchify"]


def grid_of(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Patch grid (rows, cols) of an image whose sides are multiples of ``patch_size``."""
    if height % patch_size or width % patch_size:
        raise ShapeError(f"image {height}x{width} is not a multiple of patch_size {patch_size}; pad it first")
    return height // patch_size, width // patch_size


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, p*p*C) with L = (H/p)*(W/p)."""
    b, c, h, w = x.shape
    gh, gw = grid_of(h, w, patch_size)
    x = x.reshape(b, c, gh, patch_size, gw, patch_size)  # (B, C, gh, p, gw, p)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (B, gh, gw, p, p, C)
    return x.reshape(b, gh * gw, patch_size * patch_size * c)


def unpatchify(x: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """(B, L, p*p*C) -> (B, C, gh*p, gw*p); inverse of :func:`patchify`."""
    b = x.shape[0]
    gh, gw = grid
    x = x.reshape(b, gh, gw, patch_size, patch_size, channels)  # (B, gh, gw, p, p, C)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, gh, p, gw, p)
    return x.reshape(b, channels, gh * patch_size, gw * patch_size)


def patch_mask(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 1, H, W) pixel mask (1 = hole) -> (B, L) bool, True where the patch has any hole pixel."""
    grid_of(mask.shape[-2], mask.shape[-1], patch_size)
    pooled = F.max_pool2d((mask > 0.5).float(), kernel_size=patch_size, stride=patch_size)  # (B, 1, gh, gw)
    return pooled.flatten(1) > 0.5  # (B, L)


def pad_to_multiple(
    image: torch.Tensor, mask: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Pad image and mask on the bottom/right to a multiple of ``multiple`` (edge replication).

    Replicated border pixels are known content, so the padding adds no hole the model would
    have to fill. Returns the padded pair and the original (H, W) to crop back to.
    """
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image, mask, (h, w)
    image = F.pad(image, (0, pw, 0, ph), mode="replicate")
    mask = F.pad(mask, (0, pw, 0, ph), mode="replicate")
    return image, mask, (h, w)
