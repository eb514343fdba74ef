"""MAE's lr scaling for the ViT-B variants, and the refusal of crops larger than the shards' images."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.params import params_for_tests
from helpers.train import tiny_variant

from inpnet.config import load_params, parse_params
from inpnet.errors import ConfigError
from inpnet.train.optim import peak_lr


def test_linear_rule_scales_with_the_global_batch() -> None:
    assert peak_lr(1.5e-4, "none", batch_size=128, world_size=8, grad_accum=2) == 1.5e-4
    assert peak_lr(1.5e-4, "linear", batch_size=128, world_size=8, grad_accum=2) == pytest.approx(1.5e-4 * 2048 / 256)
    assert peak_lr(1.5e-4, "linear", batch_size=256, world_size=1, grad_accum=1) == pytest.approx(1.5e-4)
    with pytest.raises(ValueError, match="lr_scaling"):
        peak_lr(1e-3, "sqrt", batch_size=1, world_size=1, grad_accum=1)


def test_the_optimiser_trains_at_the_scaled_peak_for_its_world_size() -> None:
    import torch

    from inpnet.train.steps import generator_optimiser

    v = tiny_variant("inpnet_tiny", lr=1e-3, lr_scaling="linear", batch_size=4, grad_accum=2, warmup_steps=0)
    model = torch.nn.Linear(2, 2)
    for world in (1, 4):
        opt, schedule = generator_optimiser(v, model, world_size=world)
        assert schedule.peak == pytest.approx(1e-3 * 4 * world * 2 / 256)
        assert opt.param_groups[0]["lr"] == pytest.approx(schedule.peak)
    plain = tiny_variant("inpnet_tiny", lr=1e-3, batch_size=4, grad_accum=2)
    assert generator_optimiser(plain, model, world_size=4)[1].peak == 1e-3


@pytest.mark.parametrize("profile", ["params.yaml", "params-places365.yaml"])
def test_vit_b_variants_scale_and_the_quickstart_variants_keep_their_lr(profile: str, repo_root: Path) -> None:
    from inpnet.train.trainer import run_notes

    params = load_params(repo_root / profile)
    for name in ("inpnet_b", "mae_b"):
        train = params.variant(name).train
        assert train.lr_scaling == "linear" and train.lr == 1.5e-4  # MAE's base lr
        assert "x global batch 1024 / 256" in run_notes(params.variant(name), 8)["effective_lr"]
    for name in ("inpnet_s_harmonic", "mae_s", "cmgan_s"):
        if name in params.variants:
            v = params.variant(name)
            assert v.train.lr_scaling == "none"
            assert run_notes(v, 1)["effective_lr"].startswith(f"{v.train.lr:.6g} (train.lr")


def test_variant_crops_larger_than_the_shards_are_refused() -> None:
    spec = {
        "data": {"shard": {"resize": 256}},
        "train": {"image_size": 512},
        "masks": {"size": 512},
        "variants": {"big": {"family": "cmgan", "model": {"img_size": 512}}},
    }
    params = parse_params(spec)  # defined, not in the pipeline: refused when trained
    with pytest.raises(ConfigError, match=r"variants\.big\.train\.image_size 512 exceeds data\.shard\.resize 256"):
        params.check_shard_size("big")
    with pytest.raises(ConfigError, match=r"variants\.big\.train\.image_size 512 exceeds data\.shard\.resize 256"):
        parse_params({**spec, "pipeline": {"variants": ["big"]}})
    parse_params({**spec, "data": {"shard": {"resize": 512}}, "pipeline": {"variants": ["big"]}})
    places = parse_params({**spec, "data": {"source": "places365"}, "pipeline": {"variants": ["big"]}})
    assert places.shard_size() is None  # original JPEGs: their size is not in the params
    sample = parse_params({**spec, "data": {"source": "sample", "sample": {"shortest_side": 160}}})
    with pytest.raises(ConfigError, match=r"exceeds data\.sample\.shortest_side 160"):
        sample.check_shard_size("big")


def test_cmgan_b512_is_refused_on_the_full_profiles_256_px_shards(repo_root: Path) -> None:
    full = load_params(repo_root / "params-places365.yaml")
    with pytest.raises(ConfigError, match=r"cmgan_b512\.train\.image_size 512 exceeds data\.shard\.resize 256"):
        full.check_shard_size("cmgan_b512")
    full.check_shard_size("cmgan_b")
    params_for_tests().check_shard_size("cmgan_s")  # the quickstart's 128 px crops of the 160 px sample
