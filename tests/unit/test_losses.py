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


def test_masked_patch_loss_norm_pix_uses_target_patch_statistics() -> None:
    image = torch.zeros(1, 3, 2, 2)
    image[..., 0, 0] = 1.0  # patch values: three 1s and nine 0s -> var (unbiased) = 0.2045...
    mask = torch.ones(1, 1, 2, 2)
    pred = image + 0.1
    var = image.flatten().var().item()
    total, _ = losses.masked_patch_loss(image, mask, pred, patch_size=2, norm_pix=True)
    assert total.item() == pytest.approx(0.01 / (var + 1e-6), rel=1e-4)
    shifted, _ = losses.masked_patch_loss(image + 0.3, mask, pred + 0.3, patch_size=2, norm_pix=True)
    assert shifted.item() == pytest.approx(total.item(), rel=1e-4)  # invariant to the patch mean


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


class _LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w, so penalties have closed forms."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (image * self.w).sum(dim=(1, 2, 3))


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
