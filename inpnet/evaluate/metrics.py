"""PSNR and SSIM on batches of images, on the tensors' device.

One documented implementation per metric, used by every report:

- Inputs are (B, 3, H, W) float tensors in [0, 1]: the composite (known pixels from the
  input, hole pixels from the method) against the original, full image, RGB. The evaluator
  passes the composite through :func:`quantize` first, so scores are those of the 8-bit image
  a user would save.
- PSNR uses data range 1 and the mean squared error over all pixels and channels of an
  image; it equals scikit-image's ``peak_signal_noise_ratio(data_range=1)`` (inf when the
  images are identical, as there; the evaluator leaves such pairs out of every mean rather
  than cap them at a number).
- SSIM is Wang et al.'s, the variant LaMa and MAT report: an 11 x 11 Gaussian window with
  sigma 1.5, C1 = (0.01)^2, C2 = (0.03)^2, population (not sample) covariances, computed per
  channel and averaged over channels. Like scikit-image's ``structural_similarity(
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
  channel_axis=-1)``, the mean is taken over the positions where the whole window lies
  inside the image (scikit-image filters with reflection, then crops 5 pixels from each
  border; a valid convolution gives exactly those values), so the two agree to ~1e-6.
  float32 is enough: on 8-bit images E[x^2] - E[x]^2 loses ~1e-7, far below C2.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["SSIM_SIGMA", "SSIM_WINDOW", "hole_psnr", "mean_colour_fill", "psnr", "quantize", "ssim"]

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11  # scikit-image: 2 * int(3.5 * sigma + 0.5) + 1 with its default truncate=3.5
_C1 = 0.01**2
_C2 = 0.03**2


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid a saved PNG would hold: ``round(clamp(x, 0, 1) * 255) / 255``."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def _check(pred: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"{name}: pred and target must both be (B, C, H, W); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB with data range 1: (B, C, H, W) x 2 -> (B,)."""
    _check(pred, target, "psnr")
    diff = pred.float() - target.float()
    mse = (
        diff.square_().mean(dim=(1, 2, 3), dtype=torch.float64)
        if diff.device.type != "mps"
        else diff.square_().mean(dim=(1, 2, 3))
    )
    return (10.0 * torch.log10(1.0 / mse)).to(torch.float32)  # (B,)


def hole_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB over the hole pixels only (mask == 1): -> (B,), NaN without a hole.

    The full-image PSNR of a composite mixes the (exact) known pixels into the mean; this
    is what the method itself contributed, the figure training-time validation and the
    "it learns" tests compare against a flat fill.
    """
    _check(pred, target, "hole_psnr")
    hole = (mask > 0.5).to(torch.float64)  # (B, 1, H, W)
    sq = (pred.double() - target.double()).square_() * hole  # (B, C, H, W)
    count = hole.sum(dim=(1, 2, 3)) * pred.shape[1]  # (B,)
    mse = sq.sum(dim=(1, 2, 3)) / count
    out = 10.0 * torch.log10(1.0 / mse)
    return torch.where(count > 0, out, torch.full_like(out, float("nan"))).to(torch.float32)


def mean_colour_fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The flat reference a learned model must beat: every hole pixel set to the mean colour
    of the image's known pixels. (B,3,H,W), (B,1,H,W) -> (B,3,H,W)."""
    known = (mask <= 0.5).to(image.dtype)  # (B, 1, H, W)
    mean = (image * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
    return torch.where(mask > 0.5, mean.expand_as(image), image)


@functools.lru_cache(maxsize=8)
def _gaussian_1d(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return (g / g.sum()).to(device=device, dtype=dtype)


def _blur_valid(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian, valid positions only: (N, C, H, W) -> (N, C, H - 10, W - 10)."""
    c = x.shape[1]
    g = _gaussian_1d(x.device, x.dtype)
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, SSIM_WINDOW), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, SSIM_WINDOW, 1), groups=c)


@torch.no_grad()
def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian 11 x 11, sigma 1.5, channel mean): (B, C, H, W) x 2 -> (B,).

    Images must be at least 11 x 11. Computed in float32 on the tensors' device, without
    gradients (an evaluation metric, not a loss).
    """
    _check(pred, target, "ssim")
    b, c, h, w = pred.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    x, y = pred.float(), target.float()
    # (B, 5C, H, W): x, y, x^2, y^2, xy filtered by one grouped convolution; channels-last
    # makes the depthwise convolution about twice as fast on CPU
    maps = torch.empty((b, 5 * c, h, w), device=x.device, dtype=torch.float32, memory_format=torch.channels_last)
    maps[:, :c] = x
    maps[:, c : 2 * c] = y
    torch.mul(x, x, out=maps[:, 2 * c : 3 * c])
    torch.mul(y, y, out=maps[:, 3 * c : 4 * c])
    torch.mul(x, y, out=maps[:, 4 * c :])
    mx, my, exx, eyy, exy = torch.split(_blur_valid(maps), c, dim=1)  # each (B, C, H - 10, W - 10)
    # in place where possible: these maps are the largest tensors of an evaluation batch
    mx_my = mx * my
    mx2, my2 = mx * mx, my * my
    cov = exy.sub_(mx_my)
    var_sum = exx.add_(eyy).sub_(mx2).sub_(my2)
    num = mx_my.mul_(2).add_(_C1).mul_(cov.mul_(2).add_(_C2))
    den = mx2.add_(my2).add_(_C1).mul_(var_sum.add_(_C2))
    return num.div_(den).mean(dim=(1, 2, 3))  # (B,): mean over channels and positions
