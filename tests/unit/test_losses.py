"""Loss terms: known values on simple inputs, adversarial kinds, R1 and gradient penalty, build_loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from inpnet import losses
from inpnet.config import CMGANModelConfig, InpNetModelConfig, LossConfig, MAEModelConfig
from inpnet.losses import build_loss
from inpnet.models.build import build_discriminator
from inpnet.models.discriminators import Discriminator


def _half_hole(b: int = 2, size: int = 8) -> torch.Tensor:
    mask = torch.zeros(b, 1, size, size)
    mask[..., : size // 2, :] = 1  # top half is the hole
    return mask


def test_reconstruction_known_values() -> None:
    image = torch.zeros(2, 3, 8, 8)
    mask = _half_hole()
    pred = torch.where(mask > 0.5, torch.full_like(image, 0.5), torch.full_like(image, 0.1))
    total, parts = losses.reconstruction_loss(image, mask, pred, kind="mse", hole_weight=2.0, valid_weight=0.5)
    assert parts["mse_hole"].item() == pytest.approx(0.25)
    assert parts["mse_valid"].item() == pytest.approx(0.01)
    assert total.item() == pytest.approx(2.0 * 0.25 + 0.5 * 0.01)
    total, parts = losses.reconstruction_loss(image, mask, pred, kind="l1", hole_weight=1.0, valid_weight=1.0)
    assert parts == pytest.approx({"l1_hole": 0.5, "l1_valid": 0.1})
    assert all(not v.requires_grad and v.ndim == 0 for v in parts.values())


def test_reconstruction_with_empty_hole_is_whole_image_loss() -> None:
    image = torch.zeros(1, 3, 4, 4)
    total, parts = losses.reconstruction_loss(
        image, torch.zeros(1, 1, 4, 4), image + 0.2, hole_weight=1.0, valid_weight=1.0
    )
    assert parts["mse_hole"].item() == 0.0
    assert total.item() == pytest.approx(0.04)
    with pytest.raises(ValueError, match="mse"):
        losses.reconstruction_loss(image, torch.zeros(1, 1, 4, 4), image, kind="l2")  # type: ignore[arg-type]  # an unknown kind, on purpose


def test_masked_patch_loss_counts_masked_patches_only() -> None:
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 0, 0] = 1  # one pixel masks the whole top-left 4x4 patch
    pred = image.clone()
    pred[..., 4:, 4:] = 0.0  # wrong only on a visible patch: no loss
    pred[..., 1, 1] += 0.4  # wrong on a known pixel of the masked patch: counts
    total, parts = losses.masked_patch_loss(image, mask, pred, patch_size=4)
    assert total.item() == pytest.approx(3 * 0.16 / 48, rel=1e-5)  # one masked patch: mean over its 48 values
    assert set(parts) == {"mae_mse"}


def test_masked_patch_loss_norm_pix_is_maes_loss_on_the_decoder_output() -> None:
    """MAE's form: ((n - (t - mean_t) / sqrt(var_t + 1e-6))**2).mean() on masked patches, where
    n is the decoder's raw output, here recovered from pixels written with known-pixel stats."""
    from inpnet.models.patches import known_patch_stats, unpatchify

    g = torch.Generator().manual_seed(0)
    p, mean, std = 4, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    image = torch.rand(2, 3, 16, 16, generator=g)
    image[0, :, 4:8, 4:8] = 0.3  # a flat target patch: the old form weighted it by 1 / 1e-6
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:10] = 1
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    x = (image - m) / s
    n = torch.randn(2, 16, p * p * 3, generator=g)  # what a decoder predicts, per patch normalised
    k_mean, k_std = known_patch_stats(x, mask, p)
    prediction = unpatchify(n * k_std + k_mean, p, (4, 4)) * s + m
    total, parts = losses.masked_patch_loss(
        image, mask, prediction, patch_size=4, norm_pix=True, pixel_mean=mean, pixel_std=std
    )
    t = torch.einsum("nchpwq->nhwpqc", x.reshape(2, 3, 4, p, 4, p)).reshape(2, 16, -1)  # MAE's patchify
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    masked = torch.nn.functional.max_pool2d(mask, p).flatten(1) > 0  # (2, 16)
    expected = ((n - t) ** 2).mean(-1)[masked].mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-4)
    assert set(parts) == {"mae_mse"} and total.item() < 10.0  # no patch dominates


def test_known_patch_stats_read_known_pixels_only() -> None:
    from inpnet.models.patches import known_patch_stats

    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1  # top half hole
    other = torch.where(mask > 0.5, torch.full_like(x, float("nan")), x)
    a, b = known_patch_stats(x, mask, 4), known_patch_stats(other, mask, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.isfinite(a[0]).all()
    known = x[..., 8:, :]  # a top-row patch (neighbourhood all hole) falls back to the image's known pixels
    assert a[0][0, 0, 0].item() == pytest.approx(known.mean().item(), rel=1e-5)
    assert a[1][0, 0, 0].item() == pytest.approx((known.var() + 1e-6).sqrt().item(), rel=1e-4)
    win = x[..., 8:16, 4:16]  # patch (2, 2): its 3x3 neighbourhood's known rows 8..15 (row block 1 is hole)
    assert a[0][0, 2 * 4 + 2, 0].item() == pytest.approx(win.mean().item(), rel=1e-5)
    _, none_std = known_patch_stats(x, torch.ones(1, 1, 16, 16), 4)
    assert torch.allclose(none_std, torch.tensor(1.0), atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "d_zero", "g_zero"),
    [("nonsaturating", 2 * math.log(2), math.log(2)), ("hinge", 2.0, 0.0), ("wgan_gp", 0.0, 0.0)],
)
def test_adversarial_known_values(kind: str, d_zero: float, g_zero: float) -> None:
    zeros = torch.zeros(4, 1, 3, 3)
    assert losses.d_loss(kind, zeros, zeros).item() == pytest.approx(d_zero)
    assert losses.g_loss(kind, zeros).item() == pytest.approx(g_zero)
    real, fake = torch.full((2, 1), 2.0), torch.full((2, 1), -2.0)
    d = losses.d_loss(kind, real, fake).item()
    expected = {"nonsaturating": 2 * math.log1p(math.exp(-2)), "hinge": 0.0, "wgan_gp": -4.0}[kind]
    assert d == pytest.approx(expected, rel=1e-6)
    assert losses.g_loss(kind, fake).item() == pytest.approx(
        {"nonsaturating": math.log1p(math.exp(2)), "hinge": 2.0, "wgan_gp": 2.0}[kind], rel=1e-6
    )


def test_unknown_adversarial_kind() -> None:
    with pytest.raises(ValueError, match="hinge"):
        losses.d_loss("lsgan", torch.zeros(1), torch.zeros(1))  # type: ignore[arg-type]  # an unknown kind, on purpose


class _LinearCritic(Discriminator):
    """D(x) = <w, x> on the image as given: its input gradient is w, so penalties have closed forms."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def to_input(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def score(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (x * self.w).sum(dim=(1, 2, 3))


def test_r1_and_gradient_penalty_closed_forms() -> None:
    w = torch.full((1, 3, 4, 4), 0.5)  # ||w||^2 = 48 * 0.25 = 12
    d = _LinearCritic(w)
    image = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    mask = _half_hole(size=4)
    assert losses.r1_penalty(d, image, mask).item() == pytest.approx(12.0)
    assert losses.r1_penalty(d, image, mask, masked=True).item() == pytest.approx(6.0)
    gp = losses.gradient_penalty(d, image, image.flip(0), mask, generator=torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((math.sqrt(12.0) - 1) ** 2, rel=1e-5)
    unit = _LinearCritic(torch.full((1, 3, 4, 4), 1 / math.sqrt(48)))
    assert losses.gradient_penalty(unit, image, image.flip(0), mask).item() == pytest.approx(0.0, abs=1e-10)


def test_r1_on_patchgan_is_finite_positive_and_trains_d() -> None:
    d = build_discriminator("patchgan", img_size=32, base_channels=8)
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    r1 = losses.r1_penalty(d, image, mask)
    assert torch.isfinite(r1) and r1.item() > 0
    masked = losses.r1_penalty(d, image, mask, masked=True)
    assert 0 < masked.item() < r1.item()
    r1.backward()  # double backward reaches every weight of D (biases do not change a piecewise-linear D's slope)
    weights = [p for name, p in d.named_parameters() if p.ndim > 1]
    assert weights and all(
        p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in weights
    )
    gp = losses.gradient_penalty(d, image, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), mask)
    assert torch.isfinite(gp)


def test_build_loss_per_family() -> None:
    image = torch.zeros(1, 3, 32, 32)
    mask = _half_hole(1, 32)
    pred = image + 0.5
    cfg = LossConfig(hole_weight=1.0, valid_weight=0.5)
    _, parts = build_loss(InpNetModelConfig(), cfg)(image, mask, pred)
    assert set(parts) == {"mse_hole", "mse_valid"}
    total, parts = build_loss(CMGANModelConfig(), cfg)(image, mask, pred)
    assert set(parts) == {"l1_hole", "l1_valid"} and total.item() == pytest.approx(0.75)
    _, parts = build_loss(CMGANModelConfig(), cfg.model_copy(update={"rec_loss": "mse"}))(image, mask, pred)
    assert set(parts) == {"mse_hole", "mse_valid"}
    total, parts = build_loss(MAEModelConfig(patch_size=16), cfg)(image, mask, pred)
    assert set(parts) == {"mae_mse"} and total.item() == pytest.approx(0.25)
