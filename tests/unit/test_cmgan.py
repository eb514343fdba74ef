"""CM-GAN: generator, its blocks, the StyleGAN2 discriminator and adversarial training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.params import params_for_tests

from inpnet.models.cmgan import CMGAN
from inpnet.models.composite import composite
from inpnet.models.ffc import FFCResBlock
from inpnet.models.mask_attention import MaskAwareAttention
from inpnet.models.modulation import ModulatedConv2d
from inpnet.models.stylegan_disc import StyleGAN2Discriminator

TINY = dict(base_channels=4, max_channels=16, num_ffc_blocks=1, style_dim=16, mapping_layers=1, attn_heads=2)


def _batch(size: int, b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, size, size, generator=g)
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, size // 4 : 3 * size // 4, size // 8 : size // 2] = 1.0  # a box hole
    return image, mask


@pytest.mark.parametrize("size", [64, 256])
def test_forward_shape_range_finite(size: int) -> None:
    torch.manual_seed(0)
    model = CMGAN(img_size=size, **TINY)
    image, mask = _batch(size)
    out = model(image, mask, generator=torch.Generator().manual_seed(1))
    assert out.shape == image.shape
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    # the initial output is not saturated at 0 or 1 (the RGB gain keeps tanh in range)
    assert ((out - 0.5).abs() > 0.49).float().mean() < 0.05


@pytest.mark.parametrize("attention", [True, False])
def test_every_parameter_gets_a_gradient(attention: bool) -> None:
    torch.manual_seed(0)
    model = CMGAN(img_size=32, mask_attention=attention, **TINY)
    disc = StyleGAN2Discriminator(img_size=32, base_channels=4, max_channels=16)
    assert any(isinstance(m, MaskAwareAttention) for m in model.modules()) is attention
    image, mask = _batch(32, b=4)
    pred = model(image, mask, generator=torch.Generator().manual_seed(0))
    (disc(composite(image, mask, pred), mask).mean() + (pred - image).abs().mean()).backward()
    for name, module in (("G", model), ("D", disc)):
        for pname, p in module.named_parameters():
            assert p.grad is not None, f"{name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} gradient not finite"
            assert p.grad.abs().sum() > 0, f"{name}.{pname} gradient is all zero"


def test_model_never_reads_hole_pixels_and_composite_keeps_known() -> None:
    torch.manual_seed(0)
    model = CMGAN(img_size=32, **TINY).eval()
    image, mask = _batch(32)
    other = torch.where(mask > 0.5, torch.rand_like(image), image)  # same known pixels, new hole
    with torch.no_grad():
        a, b = model(image, mask), model(other, mask)
    assert torch.equal(a, b)
    out = composite(image, mask, a)
    known = (mask < 0.5).expand_as(image)
    assert torch.equal(out[known], image[known])


def test_noise_is_explicit_and_zero_without_a_generator() -> None:
    torch.manual_seed(0)
    model = CMGAN(img_size=32, **TINY)
    for blk in model.modules():  # noise strengths start at 0; make per-layer noise visible
        if hasattr(blk, "strength"):
            blk.strength.data.fill_(0.5)
    image, mask = _batch(32)
    with torch.no_grad():
        det1, det2 = model(image, mask), model(image, mask)
        s1 = model(image, mask, generator=torch.Generator().manual_seed(1))
        s1b = model(image, mask, generator=torch.Generator().manual_seed(1))
        s2 = model(image, mask, generator=torch.Generator().manual_seed(2))
        train_mode = model(image, mask, generator=torch.Generator().manual_seed(3))  # the step passes one
        model.eval()
        eval_mode = model(image, mask)  # eval mode, no generator: deterministic
    assert torch.equal(det1, det2) and torch.equal(s1, s1b)
    assert not torch.allclose(s1, s2) and not torch.allclose(train_mode, det1)
    assert torch.equal(eval_mode, model(image, mask))


def test_demodulation_removes_style_scale() -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 8, 3, code_dim=4)
    x = torch.randn(2, 8, 16, 16)
    style = torch.rand(2, 8) + 0.5
    a, b = conv.conv(x, style), conv.conv(x, style * 10.0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert 0.5 < a.std() < 1.5  # unit-variance in, about unit-variance out


def test_ffc_block_has_global_receptive_field() -> None:
    torch.manual_seed(0)
    block = FFCResBlock(8).eval()
    x = torch.randn(1, 8, 16, 16)
    y = x.clone()
    y[:, :, 0, 0] += 5.0  # one corner pixel
    with torch.no_grad():
        delta = (block(y) - block(x)).abs().sum(dim=1)[0]  # (16, 16)
    assert delta[-1, -1] > 1e-4 and (delta > 1e-6).all()  # the far corner and every position react


def test_mask_attention_ignores_keys_inside_the_hole() -> None:
    torch.manual_seed(0)
    attn = MaskAwareAttention(8, num_heads=2).eval()
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :, 16:] = 1.0  # right half is hole: at 8x8, columns 4..7 are fully hole
    x = torch.randn(1, 8, 8, 8)
    hole_perturbed, known_perturbed = x.clone(), x.clone()
    hole_perturbed[..., :, 4:] += 3.0 * torch.randn(1, 8, 8, 4)
    known_perturbed[..., :, 2:3] += 3.0 * torch.randn(1, 8, 8, 1)
    with torch.no_grad():
        base = attn(x, mask)[..., :, :2]  # known queries away from the perturbed column
        from_hole = (attn(hole_perturbed, mask)[..., :, :2] - base).abs().max()
        from_known = (attn(known_perturbed, mask)[..., :, :2] - base).abs().max()
    assert from_hole < 1e-2 * from_known
    assert torch.isfinite(attn(x, torch.ones(1, 1, 32, 32))).all()  # an all-hole map stays defined


def test_discriminator_scores_and_r1_is_positive() -> None:
    from inpnet import losses

    torch.manual_seed(0)
    disc = StyleGAN2Discriminator(img_size=32, base_channels=4, max_channels=16)
    image, mask = _batch(32, b=3)  # batch of 3: the minibatch-stddev group adapts
    scores = disc(image, mask)
    assert scores.shape == (3, 1) and torch.isfinite(scores).all()
    for masked in (False, True):
        r1 = losses.r1_penalty(disc, image, mask, masked=masked)
        assert torch.isfinite(r1) and r1 > 0
    full, hole_only = losses.r1_penalty(disc, image, mask), losses.r1_penalty(disc, image, mask, masked=True)
    assert hole_only < full


def test_variants_resolve_and_build(repo_root) -> None:
    from inpnet.models.build import build_discriminator, build_model

    params = params_for_tests()
    for name in ("cmgan_tiny", "cmgan_s", "cmgan_b", "cmgan_b512"):
        assert params.variant(name).model.family == "cmgan"
    assert params.variant("cmgan_s").model.mask_attention and not params.variant("cmgan_s_noattn").model.mask_attention
    v = params.variant("cmgan_tiny")
    model = build_model(v.model)
    assert isinstance(model, CMGAN) and model.img_size == v.train.image_size
    disc = build_discriminator("stylegan2", img_size=v.train.image_size, base_channels=8)
    assert isinstance(disc, StyleGAN2Discriminator)


@pytest.mark.slow
def test_short_adversarial_run_moves_both_losses_and_ema(repo_root) -> None:
    """The trainer's own components (AdversarialStep, optimisers, EMA) on cmgan_tiny."""
    from inpnet.train.distributed import DistInfo
    from inpnet.train.trainer import build_components

    variant = params_for_tests().variant("cmgan_tiny")
    variant = variant.model_copy(update={"train": variant.train.model_copy(update={"ema_decay": 0.9})})
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    comp = build_components(variant, info)
    assert comp.ema is not None and comp.disc is not None
    assert comp.step.noise is not None  # the trainer seeds CM-GAN's noise
    assert comp.disc.from_input.weight.shape[0] == variant.train.loss.disc.channels
    size, b = variant.train.image_size, variant.train.batch_size
    g = torch.Generator().manual_seed(0)
    history: dict[str, list[float]] = {"d_loss": [], "g_adv": [], "total": []}
    for step in range(8):
        image = torch.rand(b, 3, size, size, generator=g)
        mask = (torch.rand(b, 1, size, size, generator=g) > 0.5).float()
        parts = comp.step([(image, mask)], step)
        comp.ema.update(comp.model)
        for key, series in history.items():
            series.append(float(parts[key]))
    for key, values in history.items():
        assert all(torch.isfinite(torch.tensor(values))), f"{key} not finite: {values}"
        assert max(values) - min(values) > 1e-4, f"{key} did not move: {values}"
    live = dict(comp.model.named_parameters())
    differ = [n for n, p in comp.ema.module.named_parameters() if not torch.equal(p, live[n])]
    assert len(differ) > len(live) // 2


@pytest.mark.parametrize("masked", [False, True])
def test_r1_is_taken_in_the_discriminators_input_space(masked: bool) -> None:
    """D sees 2 * image - 1: R1 is ||dD/dx||^2 for that x, a quarter of the [0, 1] image's."""
    from inpnet import losses

    torch.manual_seed(0)
    disc = StyleGAN2Discriminator(img_size=32, base_channels=4, max_channels=16)
    image, mask = _batch(32, b=2)
    x = (image * 2.0 - 1.0).requires_grad_(True)  # by hand, in [-1, 1]
    (grad,) = torch.autograd.grad(disc((x + 1.0) / 2.0, mask).sum(), x)
    if masked:
        grad = grad * mask
    by_hand = grad.square().sum(dim=(1, 2, 3)).mean()
    r1 = losses.r1_penalty(disc, image, mask, masked=masked)
    torch.testing.assert_close(r1, by_hand, rtol=1e-4, atol=1e-8)


def test_w_avg_tracks_the_mapping_output_and_drives_evaluation() -> None:
    """StyleGAN2's w_avg: updated (beta 0.995) by training-mode calls with noise, saved in the
    state dict, and the w that evaluation uses (never mapping(0))."""
    torch.manual_seed(0)
    model = CMGAN(img_size=32, **TINY)
    assert "w_avg" in model.state_dict() and torch.count_nonzero(model.w_avg) == 0
    image, mask = _batch(32)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((2, TINY["style_dim"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = model.mapping(z)
        model(image, mask, generator=gen)  # draws exactly that z first
    torch.testing.assert_close(model.w_avg, (1 - 0.995) * w.mean(dim=0))
    model.eval()
    with torch.no_grad():
        before = model(image, mask)
        model.w_avg.mul_(3.0)  # evaluation follows w_avg ...
        after = model(image, mask)
        model(image, mask, generator=torch.Generator().manual_seed(1))  # ... which eval mode never updates
        like = F.normalize(model.to_s(model.encode(image, mask)[4].flatten(1)), dim=1)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(model.latent(2, None, like), model.w_avg[None].expand(2, -1))
    assert not torch.allclose(model.w_avg[None], model.mapping(torch.zeros(1, TINY["style_dim"])))


def test_seeded_z_evaluation_is_one_z_for_every_image() -> None:
    torch.manual_seed(0)
    model = CMGAN(img_size=32, eval_latent="seeded_z", eval_seed=5, **TINY).eval()
    image, mask = _batch(32, b=3)
    with torch.no_grad():
        batch, single = model(image, mask), model(image[1:2], mask[1:2])
        z = torch.randn((1, TINY["style_dim"]), generator=torch.Generator().manual_seed(5))
        w = model.latent(3, None, image)
    torch.testing.assert_close(batch[1:2], single)  # independent of the batch
    torch.testing.assert_close(w, model.mapping(z).expand(3, -1))
    with pytest.raises(ValueError, match="eval_latent"):
        CMGAN(img_size=32, eval_latent="zero", **TINY)  # type: ignore[arg-type]  # an unknown choice, on purpose
