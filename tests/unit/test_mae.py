"""MAE baseline: visible-patch encoder, padded batches, checkpoint key map and loading."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from inpnet.config import MAEModelConfig
from inpnet.errors import CheckpointError
from inpnet.models.blocks import resample_pos_embed
from inpnet.models.mae import MAE
from inpnet.models.mae_weights import load_mae_weights, map_mae_keys, read_state_dict
from inpnet.models.patches import patch_mask

TINY = MAEModelConfig(
    img_size=32,
    patch_size=8,
    embed_dim=32,
    depth=2,
    num_heads=2,
    decoder_embed_dim=32,
    decoder_depth=1,
    decoder_num_heads=2,
)


def _model(seed: int = 0, **overrides) -> MAE:
    torch.manual_seed(seed)  # weight init only
    return MAE.from_config(TINY.model_copy(update=overrides)).eval()


def _masks() -> torch.Tensor:
    """Three images with 16, 11 and 0 of 16 patches visible; hole shapes cut patches partly."""
    mask = torch.zeros(3, 1, 32, 32)
    mask[1, :, 3:18, 10:25] = 1  # covers patch rows 0-2 x cols 1-3 (9 patches), most only partly
    mask[2, :, ::7, ::5] = 1  # a pixel in every patch
    return mask


def test_encoder_never_sees_masked_patches() -> None:
    model = _model()
    image = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = _masks()
    masked = patch_mask(mask, 8)
    n_visible = (~masked).sum(1)
    assert n_visible.tolist()[0] == 16 and n_visible.tolist()[2] == 0

    seen: list[torch.Tensor] = []
    hook = model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        model(image, mask)
    hook.remove()
    tokens = seen[0]  # (B, 1 + K, D)
    assert tokens.shape[1] == 1 + int(n_visible.max())
    x = (image - model.pixel_mean) / model.pixel_std
    expected_all = model.patch_embed(x) + model.pos_embed[:, 1:]  # (B, L, D)
    for i in range(3):
        vis = (~masked[i]).nonzero().flatten()
        k = len(vis)
        torch.testing.assert_close(tokens[i, 1 : 1 + k], expected_all[i, vis])  # exactly the visible patches
        assert torch.count_nonzero(tokens[i, 1 + k :]) == 0  # pad slots carry nothing

    # known pixels inside masked patches are not read either: changing them changes nothing
    scramble = torch.rand(image.shape, generator=torch.Generator().manual_seed(1))
    masked_px = torch.nn.functional.interpolate(masked.view(3, 1, 4, 4).float(), scale_factor=8) > 0
    other = torch.where(masked_px, scramble, image)
    with torch.no_grad():
        assert torch.equal(model(image, mask), model(other, mask))


def test_padded_batch_equals_images_one_by_one() -> None:
    model = _model()
    image = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = _masks()
    with torch.no_grad():
        batch = model(image, mask)
        for i in range(3):
            torch.testing.assert_close(batch[i : i + 1], model(image[i : i + 1], mask[i : i + 1]), atol=1e-5, rtol=1e-5)
        model._masked_attention = False  # the fallback for a timm without Block(attn_mask=...)
        torch.testing.assert_close(model(image, mask), batch, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ checkpoints


def _official(model: MAE, *, encoder_only: bool = False) -> dict[str, torch.Tensor]:
    """A state dict laid out as facebookresearch/mae saves it (official key names)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if encoder_only:
        state = {k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token"))}
        state["fc_norm.weight"] = torch.ones(32)
        state["head.weight"] = torch.zeros(10, 32)
    return state


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_key_map_round_trip(tmp_path: Path, fmt: str) -> None:
    source = _model(seed=1)
    state = _official(source)
    assert {
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
        "decoder_embed.weight",
        "pos_embed",
        "decoder_pos_embed",
        "mask_token",
        "cls_token",
        "decoder_pred.weight",
    } <= set(state)
    path = tmp_path / f"mae.{fmt}"
    if fmt == "pth":
        ddp = {f"module.{k}": v for k, v in state.items()}
        torch.save({"model": ddp, "epoch": 3, "args": argparse.Namespace(lr=1.0)}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    mapped, dropped = map_mae_keys(read_state_dict(path))
    assert dropped == [] and set(mapped) == set(state)
    target = _model(seed=2)
    report = load_mae_weights(target, path)
    assert not report.encoder_only and report.resampled == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    image, mask = torch.rand(3, 3, 32, 32), _masks()
    with torch.no_grad():
        assert torch.equal(target(image, mask), source(image, mask))


def test_pos_embed_comes_from_the_checkpoint(tmp_path: Path) -> None:
    state = _official(_model(seed=1))
    state["pos_embed"] = torch.randn_like(state["pos_embed"])  # any table, e.g. another channel order
    torch.save({"model": state}, tmp_path / "m.pth")
    model = _model()
    load_mae_weights(model, tmp_path / "m.pth")
    assert torch.equal(model.pos_embed, state["pos_embed"])  # copied, never regenerated


def test_encoder_only_checkpoint_keeps_the_decoder(tmp_path: Path) -> None:
    source = _model(seed=1)
    torch.save({"model": _official(source, encoder_only=True)}, tmp_path / "enc.pth")
    model = _model(seed=2)
    decoder_before = model.decoder_pred.weight.clone()
    report = load_mae_weights(model, tmp_path / "enc.pth")
    assert report.encoder_only
    assert sorted(report.dropped) == ["fc_norm.weight", "head.weight"]
    assert torch.equal(model.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert torch.equal(model.decoder_pred.weight, decoder_before)


def test_pos_embed_resampled_for_another_grid(tmp_path: Path) -> None:
    big = _model(seed=1, img_size=48)  # 6x6 grid
    state = _official(big)
    torch.save({"model": state}, tmp_path / "big.pth")
    small = _model(seed=2)  # 4x4 grid
    report = load_mae_weights(small, tmp_path / "big.pth")
    assert set(report.resampled) == {"pos_embed", "decoder_pos_embed"}
    expected = resample_pos_embed(state["pos_embed"], (4, 4), (6, 6), num_prefix_tokens=1)
    torch.testing.assert_close(small.pos_embed, expected)
    assert torch.equal(small.pos_embed[:, 0], state["pos_embed"][:, 0])  # class-token row kept
    no_cls = dict(state, pos_embed=state["pos_embed"][:, 1:])  # a table stored without the class row
    torch.save({"model": no_cls}, tmp_path / "nocls.pth")
    load_mae_weights(small, tmp_path / "nocls.pth")
    assert torch.count_nonzero(small.pos_embed[:, 0]) == 0


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(CheckpointError, match="not found"):
        load_mae_weights(model, tmp_path / "missing.pth")
    state = _official(_model(seed=1))
    torch.save({"model": {k: v for k, v in state.items() if k != "blocks.1.attn.qkv.weight"}}, tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match="missing encoder keys"):
        load_mae_weights(model, tmp_path / "a.pth")
    torch.save({"model": _official(_model(seed=1, patch_size=4))}, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match=r"patch_embed.proj.weight"):
        load_mae_weights(model, tmp_path / "b.pth")
    torch.save({"model": {k: v for k, v in state.items() if k != "decoder_pred.bias"}}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="partly"):
        load_mae_weights(model, tmp_path / "c.pth")
    torch.save({"model": state, "evil": _Unpicklable()}, tmp_path / "d.pth")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_mae_weights(model, tmp_path / "d.pth")


class _Unpicklable:
    """An arbitrary object: weights_only loading must refuse it."""


def test_from_config_loads_pretrained_only_when_asked(tmp_path: Path) -> None:
    source = _model(seed=1)
    torch.save({"model": _official(source)}, tmp_path / "p.pth")
    cfg = TINY.model_copy(update={"pretrained": str(tmp_path / "p.pth")})
    assert torch.equal(MAE.from_config(cfg).blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    torch.manual_seed(7)
    fresh = MAE.from_config(cfg, pretrained=False)
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_build_model_without_the_pretraining_file(tmp_path: Path) -> None:
    from inpnet.models.build import build_model

    cfg = TINY.model_copy(update={"pretrained": str(tmp_path / "gone.pth")})
    with pytest.raises(CheckpointError, match=r"gone.pth"):
        build_model(cfg)
    assert isinstance(build_model(cfg, pretrained=False), MAE)  # e.g. loading a trained checkpoint elsewhere


def test_norm_pix_model_and_loss_agree_on_the_decoder_output() -> None:
    """With norm_pix the decoder predicts per-patch normalised values n; the output writes them
    with known-pixel statistics, and the loss gets n back exactly: MAE's norm-pix loss."""
    from inpnet.config import LossConfig
    from inpnet.losses import build_loss
    from inpnet.models.composite import composite

    cfg = TINY.model_copy(update={"norm_pix_loss": True})
    torch.manual_seed(0)
    model = MAE.from_config(cfg).train()
    image = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = _masks()
    seen: list[torch.Tensor] = []
    hook = model.decoder_pred.register_forward_hook(lambda mod, args, out: seen.append(out[:, 1:].detach()))
    pred = model(image, mask)
    hook.remove()
    n = seen[0]  # (B, L, p*p*3)
    total, _ = build_loss(cfg, LossConfig())(image, mask, pred)
    x = (image - model.pixel_mean) / model.pixel_std
    t = torch.einsum("nchpwq->nhwpqc", x.reshape(3, 3, 4, 8, 4, 8)).reshape(3, 16, -1)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
    masked = patch_mask(mask, 8)
    assert total.item() == pytest.approx(((n - t) ** 2).mean(-1)[masked].mean().item(), rel=1e-4)

    model.eval()
    holes_nan = torch.where(mask > 0.5, torch.full_like(image, float("nan")), image)
    with torch.no_grad():
        out, out_nan = model(image, mask), model(holes_nan, mask)
    assert torch.equal(out, out_nan) and out.min() >= 0 and out.max() <= 1  # hole pixels never read
    known = (mask < 0.5).expand_as(image)
    assert torch.equal(composite(image, mask, out)[known], image[known])
