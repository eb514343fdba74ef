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

__all__ = [
    "grid_of",
    "hidden_known_fraction",
    "known_patch_stats",
    "pad_to_multiple",
    "patch_mask",
    "patch_view",
    "patchify",
    "unpatchify",
]


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


def patch_view(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 1, H, W) pixel mask (1 = hole) -> the same shape, 1 on every pixel of a patch holding any hole pixel.

    What a patch-level model treats as missing (MAE drops these patches; InP-Net's
    ``patch_view`` ablation hides them): the hole grown to whole patches. Sides that are not
    multiples of ``patch_size`` are padded as :func:`pad_to_multiple` pads a model's input
    (the last row and column repeated), then cropped back.
    """
    h, w = mask.shape[-2:]
    _, padded, _ = pad_to_multiple(mask, mask, patch_size)
    pooled = F.max_pool2d((padded > 0.5).float(), kernel_size=patch_size, stride=patch_size)  # (B, 1, gh, gw)
    grown = F.interpolate(pooled, scale_factor=patch_size, mode="nearest")  # (B, 1, gh*p, gw*p)
    return grown[..., :h, :w].to(mask.dtype)


def hidden_known_fraction(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B,) the share of each image's *known* pixels that a patch-level view hides.

    Known pixels that share a patch with a hole pixel: MAE's encoder never sees them,
    whereas a model with a mask channel (InP-Net, CM-GAN) does. An image with no known
    pixel gets 0.

    Args:
        mask: (B, 1, H, W), 1 = hole.
        patch_size: the model's patch size.
    """
    hole = mask > 0.5  # (B, 1, H, W)
    hidden = (patch_view(mask, patch_size) > 0.5) & ~hole
    known = (~hole).flatten(1).sum(dim=1)  # (B,)
    return hidden.flatten(1).sum(dim=1) / known.clamp_min(1)


def known_patch_stats(
    x: torch.Tensor, mask: torch.Tensor, patch_size: int, *, eps: float = 1.0e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and std (each (B, L, 1)) estimated from *known* pixels only.

    MAE's norm-pix target normalises each patch by its own mean and variance, which a hole
    patch cannot know at inference. This is the estimate an inpainter can compute: the
    known pixels (all channels) of the 3x3-patch neighbourhood centred on the patch (the
    patch itself included, so a partly known patch leans on its own pixels). Where that
    neighbourhood holds fewer than ``patch_size**2`` known pixel positions, the image's
    known pixels stand in; an image with none gets (0, 1). ``std = sqrt(var + eps)`` with
    the unbiased variance, as MAE's target. Hole pixels are never read (they may be NaN).

    Args:
        x: (B, C, H, W) image in the space the patches live in, sides multiples of ``patch_size``.
        mask: (B, 1, H, W), 1 = hole.
    """
    grid_of(x.shape[-2], x.shape[-1], patch_size)
    known = mask <= 0.5  # (B, 1, H, W)
    x = torch.where(known, x.float(), 0.0)  # (B, C, H, W)
    k = known.float()
    c, p = x.shape[1], patch_size

    def window_sum(t: torch.Tensor) -> torch.Tensor:  # (B, ., H, W) -> (B, 1, H/p, W/p) sums over 3p x 3p
        pooled = F.avg_pool2d(t, kernel_size=3 * p, stride=p, padding=p, count_include_pad=True)
        return pooled.sum(dim=1, keepdim=True) * float(9 * p * p)

    n = window_sum(k) * c  # known values per window
    s1, s2 = window_sum(x), window_sum(x.square())
    n_img = k.sum(dim=(1, 2, 3), keepdim=True) * c  # (B, 1, 1, 1)
    s1_img, s2_img = x.sum(dim=(1, 2, 3), keepdim=True), x.square().sum(dim=(1, 2, 3), keepdim=True)
    local = n >= p * p * c
    n = torch.where(local, n, n_img)
    s1 = torch.where(local, s1, s1_img)
    s2 = torch.where(local, s2, s2_img)
    mean = s1 / n.clamp_min(1.0)
    var = ((s2 - n * mean.square()) / (n - 1.0).clamp_min(1.0)).clamp_min(0.0)
    none = n < 2.0  # nothing known in the image: identity
    mean = torch.where(none, 0.0, mean)
    var = torch.where(none, 1.0, var)
    std = (var + eps).sqrt()
    return mean.flatten(1)[..., None], std.flatten(1)[..., None]  # (B, L, 1) each, raster order


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
