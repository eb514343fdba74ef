"""Models: the timm adapter, InP-Net, the PatchGAN and the builders (tiny configs from params.yaml)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.params import params_for_tests

from inpnet.config import InpNetModelConfig
from inpnet.errors import ConfigError, MaskError, ShapeError
from inpnet.models.blocks import (
    blocks_accept_attn_mask,
    make_patch_embed,
    make_vit_block,
    sincos_pos_embed_2d,
)
from inpnet.models.build import build_discriminator, build_model
from inpnet.models.composite import composite
from inpnet.models.inpnet import InpNet, default_skip_depths


@pytest.fixture(scope="module")
def params():
    return params_for_tests()


def _batch(size: int = 32, b: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, size, size, generator=g)
    mask = torch.zeros(b, 1, size, size)
    mask[0, :, 4:20, 6:22] = 1  # a rectangle
    if b > 1:
        mask[1] = (torch.rand(1, size, size, generator=g) > 0.7).float()  # scattered pixels
    return image, mask  # image 2 (if any) has no hole


# ----------------------------------------------------------------------------- timm adapter


def test_timm_parts_build_with_mae_names() -> None:
    block = make_vit_block(32, 2, mlp_ratio=2.0)
    names = {n for n, _ in block.named_parameters()}
    assert {
        "norm1.weight",
        "attn.qkv.weight",
        "attn.qkv.bias",
        "attn.proj.weight",
        "mlp.fc1.weight",
        "mlp.fc2.bias",
    } <= names
    assert block(torch.randn(2, 5, 32)).shape == (2, 5, 32)
    embed = make_patch_embed(img_size=32, patch_size=8, in_chans=4, embed_dim=16)
    assert embed.proj.weight.shape == (16, 4, 8, 8)
    assert embed(torch.randn(1, 4, 48, 32)).shape == (1, 6 * 4, 16)  # other sizes accepted
    assert isinstance(blocks_accept_attn_mask(), bool)


def _mae_reference_sincos(dim: int, grid: int) -> np.ndarray:
    """facebookresearch/mae get_2d_sincos_pos_embed, re-typed from its documented algorithm."""

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid_hw = np.stack(np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32)), axis=0)
    return np.concatenate([one_d(dim // 2, grid_hw[0]), one_d(dim // 2, grid_hw[1])], axis=1)


def test_sincos_matches_mae_channel_order() -> None:
    ours = sincos_pos_embed_2d(16, 4, 4).numpy()
    np.testing.assert_allclose(ours, _mae_reference_sincos(16, 4), atol=1e-6)
    # token (row 1, col 2): first quarter is sin(col), third quarter sin(row)
    assert ours[1 * 4 + 2, 0] == pytest.approx(math.sin(2.0))
    assert ours[1 * 4 + 2, 8] == pytest.approx(math.sin(1.0))


# --------------------------------------------------------------------------------- InP-Net


def test_default_skip_depths() -> None:
    assert default_skip_depths(4) == (1, 2, 3, 4)
    assert default_skip_depths(6) == (2, 3, 5, 6)
    assert default_skip_depths(12) == (3, 6, 9, 12)
    assert default_skip_depths(1) == (1,)


@pytest.mark.parametrize("variant", ["inpnet_tiny", "inpnet_tiny_patchview", "mae_tiny"])
def test_forward_shape_range_grad_and_composite(params, variant: str) -> None:
    torch.manual_seed(0)  # weight init only; data uses explicit generators
    model = build_model(params.variant(variant).model)
    image, mask = _batch()
    pred = model(image, mask)
    assert pred.shape == image.shape
    assert torch.isfinite(pred).all()
    assert pred.min() >= 0 and pred.max() <= 1
    ((pred - image) ** 2).mean().backward()
    no_grad = [
        n
        for n, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    out = composite(image, mask, pred.detach())
    known = mask.expand_as(image) < 0.5
    assert torch.equal(out[known], image[known])


@pytest.mark.parametrize("variant", ["inpnet_tiny", "inpnet_tiny_patchview", "mae_tiny"])
def test_hole_pixels_are_never_read(params, variant: str) -> None:
    model = build_model(params.variant(variant).model).eval()
    image, mask = _batch()
    other = torch.where(mask > 0.5, torch.rand(image.shape, generator=torch.Generator().manual_seed(5)), image)
    with torch.no_grad():
        assert torch.equal(model(image, mask), model(other, mask))


@pytest.mark.parametrize("variant", ["inpnet_tiny", "inpnet_tiny_patchview", "mae_tiny"])
def test_ratio_zero_and_other_sizes(params, variant: str) -> None:
    model = build_model(params.variant(variant).model).eval()
    with torch.no_grad():
        image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        pred = model(image, torch.zeros(2, 1, 32, 32))  # whole-image reconstruction
        assert pred.shape == image.shape and torch.isfinite(pred).all()
        for h, w in ((48, 40), (30, 37)):  # other multiples of the patch, and padded sizes
            out = model(torch.rand(1, 3, h, w), torch.zeros(1, 1, h, w))
            assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()


def test_shape_errors_name_the_image_and_mask_errors_the_mask(params) -> None:
    from inpnet.models.patches import grid_of

    model = build_model(params.variant("inpnet_tiny").model).eval()
    image, mask = _batch()
    with pytest.raises(ShapeError, match=r"image must have shape \(B, 3, H, W\), got \(2, 4, 32, 32\)"):
        model(torch.rand(2, 4, 32, 32), mask)
    with pytest.raises(MaskError, match=r"mask must have shape \(B, 1, H, W\)"):
        model(image, mask.expand(-1, 3, -1, -1))
    with pytest.raises(MaskError, match="does not match image shape"):
        model(image, mask[..., :16])
    with pytest.raises(ShapeError, match=r"prediction shape \(2, 3, 16, 16\)"):
        composite(image, mask, torch.rand(2, 3, 16, 16))
    with pytest.raises(ShapeError, match="30x32 is not a multiple of patch_size 8"):
        grid_of(30, 32, 8)
    assert issubclass(ShapeError, ValueError) and not issubclass(ShapeError, MaskError)


@pytest.mark.parametrize("skip", [True, False])
def test_inpnet_skip_connections_on_and_off(params, skip: bool) -> None:
    cfg = params.variant("inpnet_tiny").model.model_copy(update={"skip_connections": skip})
    model = InpNet.from_config(cfg)
    assert len(model.skips) == (3 if skip else 0)  # depth 4: taps 1, 2, 3 feed the decoder, 4 is the bottleneck
    image, mask = _batch()
    pred = model(image, mask)
    pred.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert pred.shape == image.shape


def test_inpnet_custom_skip_depths_change_the_output(params) -> None:
    base = params.variant("inpnet_tiny").model
    torch.manual_seed(0)
    a = InpNet.from_config(base.model_copy(update={"skip_depths": (2, 4)}))
    assert a.skip_depths == (2,)
    image, mask = _batch()
    with torch.no_grad():
        with_skip = a(image, mask)
        a.skips[0].reduce.weight.zero_()
        a.skips[0].reduce.bias.zero_()
        assert not torch.allclose(with_skip, a(image, mask))  # the skip path is used


def test_inpnet_config_checks() -> None:
    with pytest.raises(ValueError, match="skip_depths"):
        InpNetModelConfig(depth=4, skip_depths=(0, 5), embed_dim=32, num_heads=2)
    with pytest.raises(ValueError, match="decoder_channels"):
        InpNetModelConfig(patch_size=4, decoder_channels=(32, 16, 8, 4), embed_dim=32, num_heads=2)
    from inpnet.config import parse_params

    with pytest.raises(ConfigError, match=r"variants.bad.model"):
        parse_params({"variants": {"bad": {"family": "inpnet", "model": {"img_size": 30, "patch_size": 16}}}})


# ---------------------------------------------------------------------------- discriminators


@pytest.mark.parametrize("size", [16, 32, 128])
def test_patchgan_scores_and_gradients(size: int) -> None:
    d = build_discriminator("patchgan", img_size=size, base_channels=8)
    image = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 1, size, size)
    scores = d(image, mask)
    assert scores.ndim == 4 and scores.shape[:2] == (2, 1) and scores.shape[-1] >= 1
    assert torch.isfinite(scores).all()
    scores.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())


def test_build_dispatch(params) -> None:
    with pytest.raises(ValueError, match="unknown discriminator"):
        build_discriminator("nope", img_size=32)  # type: ignore[arg-type]  # an unknown kind, on purpose
    d = build_discriminator("stylegan2", img_size=32, base_channels=8)  # H7's module, imported lazily
    assert d(torch.rand(4, 3, 32, 32), torch.zeros(4, 1, 32, 32)).shape[0] == 4
    assert type(build_model(params.variant("cmgan_tiny").model)).__name__ == "CMGAN"


def test_inpnet_decoder_runs_in_fp32_under_bf16_autocast(params) -> None:
    """Only the encoder's matmuls may run in bf16: the transposed convolutions (wrong under
    oneDNN bf16 on AMX CPUs), GroupNorm, head and sigmoid see fp32, and the output is fp32."""
    model = build_model(params.variant("inpnet_tiny").model).eval()
    seen: dict[str, torch.dtype] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=name: seen.__setitem__(n, out.dtype))
        for name, m in model.named_modules()
        if name.startswith(("stages", "skips", "head"))
    ]
    image, mask = torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:20, 4:28] = 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, mask)
        enc = model.blocks[0].mlp.fc1(torch.zeros(1, model.embed_dim))
    for h in hooks:
        h.remove()
    assert enc.dtype is torch.bfloat16  # autocast is on: the encoder does run in bf16
    assert seen and set(seen.values()) == {torch.float32}, seen
    assert out.dtype is torch.float32
    with torch.no_grad():
        ref = model(image, mask)
    assert (out - ref).abs().max() < 0.05  # bf16 encoder, fp32 decoder: close to fp32


# ----------------------------------------------------------------------------- pre-fill


def test_push_pull_fills_from_known_pixels_only() -> None:
    from inpnet.models.prefill import push_pull

    image, mask = _batch(b=2)
    known = 1.0 - mask
    out = push_pull(image, known)
    assert torch.equal(out[known.expand_as(image) > 0.5], image[known.expand_as(image) > 0.5])
    other = torch.where(mask > 0.5, torch.rand(image.shape, generator=torch.Generator().manual_seed(3)), image)
    assert torch.equal(push_pull(other, known), out)  # hole pixels are never read
    flat = torch.full((1, 3, 32, 32), 0.25)
    assert torch.allclose(push_pull(flat, known[:1]), flat)  # a constant image stays constant
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    hole = torch.zeros(1, 1, 32, 32)
    hole[:, :, 8:24, 12:20] = 1
    filled = push_pull(ramp, 1.0 - hole)
    inside = hole.expand_as(ramp) > 0.5
    assert (filled - ramp)[inside].abs().mean() < 0.06  # close to the ramp, unlike a flat fill (~0.07 off)
    assert torch.equal(push_pull(image, torch.zeros_like(mask)), torch.full_like(image, 0.5))  # nothing known


def test_harmonic_fill_solves_laplace_from_known_pixels_only() -> None:
    from inpnet.models.prefill import harmonic, push_pull

    image, mask = _batch(b=2)
    known = 1.0 - mask
    out = harmonic(image, known)
    keep = known.expand_as(image) > 0.5
    assert torch.equal(out[keep], image[keep])
    other = torch.where(mask > 0.5, torch.full_like(image, float("nan")), image)
    assert torch.equal(harmonic(other, known), out)  # hole pixels are never read, not even a NaN
    flat = torch.full((1, 3, 32, 32), 0.25)
    assert torch.allclose(harmonic(flat, known[:1]), flat)
    # a linear ramp is harmonic: the fill reproduces it inside the hole, far closer than push-pull
    ramp = torch.linspace(0.1, 0.9, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    hole = torch.zeros(1, 1, 32, 32)
    hole[:, :, 8:24, 12:20] = 1
    inside = hole.expand_as(ramp) > 0.5
    err = (harmonic(ramp, 1.0 - hole) - ramp)[inside].abs().mean()
    assert err < 1e-5 and (push_pull(ramp, 1.0 - hole) - ramp)[inside].abs().mean() > 1e-3
    # the cascade with few fine sweeps is close to a converged solve, and more sweeps get closer
    converged = harmonic(image, known, sweeps=200, fine_sweeps=400)
    hole_px = ~keep
    fast = (out - converged)[hole_px].abs().mean()
    assert fast < 0.03  # on a random test batch; on the sample photos the gap is ~0.1 dB of PSNR
    assert (harmonic(image, known, sweeps=40, fine_sweeps=20) - converged)[hole_px].abs().mean() < fast
    assert torch.equal(harmonic(image, torch.zeros_like(mask)), torch.full_like(image, 0.5))  # nothing known
    with pytest.raises(ValueError, match="omega"):
        harmonic(image, known, omega=2.0)


@pytest.mark.parametrize("kind", ["pushpull", "harmonic", "telea"])
def test_inpnet_prefill_starts_at_the_fill_and_learns_a_correction(params, kind: str) -> None:
    from inpnet.models.prefill import prefill

    cfg = params.variant("inpnet_tiny").model.model_copy(update={"prefill": kind})
    torch.manual_seed(0)
    model = build_model(cfg)
    image, mask = _batch()
    base = prefill(kind, torch.where(mask > 0.5, 0.0, image), mask)
    pred = model(image, mask)
    hole = mask.expand_as(image) > 0.5
    assert (pred - base)[hole].abs().max() < 2e-3  # untrained: the classical fill itself
    other = torch.where(mask > 0.5, torch.rand(image.shape, generator=torch.Generator().manual_seed(5)), image)
    with torch.no_grad():
        assert torch.equal(model.eval()(image, mask), model(other, mask))  # hole pixels are never read
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # the zero head gets a gradient first, then the rest of the network
        opt.zero_grad()
        ((model(image, mask) - image) ** 2 * mask).mean().backward()
        opt.step()
    assert model.head.weight.abs().sum() > 0 and model.blocks[0].mlp.fc1.weight.grad.abs().sum() > 0
