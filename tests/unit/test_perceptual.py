"""The perceptual term: VGG-19 features from a local, checksummed file; on only when the file is there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from inpnet.config import CMGANModelConfig, InpNetModelConfig, LossConfig, MAEModelConfig
from inpnet.errors import CheckpointError, ConfigError
from inpnet.losses import PERCEPTUAL_LAYER_WEIGHTS, WithPerceptual, build_loss, perceptual_loss, perceptual_status
from inpnet.models.vgg import VGG19_LAYERS, VGG19Features, load_vgg19_features
from inpnet.registry.tracking import file_sha256


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Random VGG-19 weights the test makes, saved as safetensors with torchvision's key names."""
    from safetensors.torch import save_file
    from torchvision.models import vgg19

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in vgg19(weights=None).state_dict().items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg19.safetensors"
    save_file(state, str(path))
    digest = file_sha256(path)
    assert digest is not None
    return path, digest


@pytest.fixture(scope="module")
def features(vgg_file: tuple[Path, str]) -> VGG19Features:
    """The loaded, frozen backbone, built once (VGG-19 takes seconds to construct on a CPU)."""
    return load_vgg19_features(*vgg_file)


def _images(seed: int = 0, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=g), torch.rand(2, 3, size, size, generator=g)


def test_weights_load_verified_and_frozen(vgg_file: tuple[Path, str]) -> None:
    path, digest = vgg_file
    from safetensors.torch import load_file

    features = load_vgg19_features(path, digest)
    assert features.layers == tuple(VGG19_LAYERS) and len(features.body) == max(VGG19_LAYERS.values()) + 1
    assert torch.equal(features.body[28].weight, load_file(str(path))["features.28.weight"])  # conv5_1 loaded
    assert not any(p.requires_grad for p in features.parameters())
    features.train()
    assert not features.training  # a frozen instrument stays in eval mode
    assert load_vgg19_features(path, digest[:8]).layers  # torch hub's 8-digit prefix verifies too


def test_torchvisions_pth_loads_without_unpickling_objects(vgg_file: tuple[Path, str], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(vgg_file[0]))
    pth = tmp_path / "vgg19.pth"
    torch.save(state, pth)  # torchvision's format: a plain state dict
    features = load_vgg19_features(pth, file_sha256(pth) or "")
    assert torch.equal(features.body[0].weight, state["features.0.weight"])
    evil = tmp_path / "evil.pth"
    torch.save({"model": state, "hook": print}, evil)  # an object weights_only refuses to unpickle
    with pytest.raises(CheckpointError, match=r"cannot read VGG-19 weights .*evil.pth"):
        load_vgg19_features(evil, file_sha256(evil) or "")


def test_checksum_mismatch_and_foreign_files_are_refused_with_the_path(
    vgg_file: tuple[Path, str], tmp_path: Path
) -> None:
    path, digest = vgg_file
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(CheckpointError, match=rf"{path}: sha256 {digest} does not match {wrong}"):
        load_vgg19_features(path, wrong)
    with pytest.raises(CheckpointError, match=r"missing.*not found"):
        load_vgg19_features(tmp_path / "missing.safetensors", digest)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(other))
    with pytest.raises(CheckpointError, match=r"other.safetensors: missing \['0.bias'"):
        load_vgg19_features(other, file_sha256(other) or "")


def test_loss_is_zero_for_identical_images_positive_otherwise(features: VGG19Features) -> None:
    a, b = _images()
    assert perceptual_loss(features, a, a.clone()).item() == 0.0
    assert perceptual_loss(features, b, a).item() > 0.0
    # each layer contributes with its pix2pixHD weight
    parts = [(p - t).abs().mean() for p, t in zip(features(b), features(a), strict=True)]
    expected = sum(w * v for w, v in zip(PERCEPTUAL_LAYER_WEIGHTS.values(), parts, strict=True))
    assert perceptual_loss(features, b, a).item() == pytest.approx(float(expected), rel=1e-5)


def test_gradients_reach_the_generator_not_the_backbone(features: VGG19Features) -> None:
    torch.manual_seed(0)
    generator = nn.Conv2d(3, 3, 3, padding=1)
    image, _ = _images()
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    base = build_loss(_cmgan_model(), LossConfig())
    total, parts = WithPerceptual(base, features, 10.0)(image, mask, torch.sigmoid(generator(image)))
    total.backward()
    assert parts["perceptual"] > 0 and "l1_hole" in parts
    assert generator.weight.grad is not None and generator.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in features.parameters())


def test_bf16_autocast_gives_the_fp32_value(features: VGG19Features) -> None:
    a, b = _images(1)
    plain = perceptual_loss(features, b, a)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = perceptual_loss(features, b, a)
    assert mixed.dtype == torch.float32 and mixed.item() == pytest.approx(plain.item(), rel=1e-6)


def _cmgan_model() -> InpNetModelConfig | MAEModelConfig | CMGANModelConfig:
    from helpers.params import tiny_variant

    return tiny_variant("cmgan_tiny").model


def test_the_term_is_on_only_with_the_file_and_says_why_not(vgg_file: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = vgg_file
    model = _cmgan_model()
    assert perceptual_status(LossConfig()) == (False, None)
    no_path = LossConfig(perceptual_weight=1.0)
    on, why = perceptual_status(no_path)
    assert not on and why is not None and "no loss.perceptual_weights_path" in why and "weights fetch" in why
    assert not isinstance(build_loss(model, no_path), WithPerceptual)
    absent = LossConfig(
        perceptual_weight=1.0, perceptual_weights_path=str(tmp_path / "x.pth"), perceptual_weights_sha256=digest
    )
    on, why = perceptual_status(absent)
    assert not on and why is not None and "x.pth does not exist" in why
    given = LossConfig(perceptual_weight=2.0, perceptual_weights_path=str(path), perceptual_weights_sha256=digest)
    assert perceptual_status(given)[0]
    fn = build_loss(model, given)
    assert isinstance(fn, WithPerceptual) and fn.weight == 2.0
    bad = given.model_copy(update={"perceptual_weights_sha256": "f" * 64})
    with pytest.raises(CheckpointError, match=str(path)):
        build_loss(model, bad)


def test_keys_that_would_do_nothing_are_refused() -> None:
    from inpnet.config import parse_params

    def loss(**kw: object) -> None:
        parse_params({"train": {"loss": kw}})

    with pytest.raises(ConfigError, match=r"perceptual_weights_path 'w.pth' is set but loss.perceptual_weight is 0"):
        loss(perceptual_weights_path="w.pth", perceptual_weights_sha256="a" * 64)
    with pytest.raises(ConfigError, match=r"needs loss.perceptual_weights_sha256"):
        loss(perceptual_weight=1.0, perceptual_weights_path="w.pth")
    with pytest.raises(ConfigError, match=r"perceptual_weights_sha256 is set without"):
        loss(perceptual_weight=1.0, perceptual_weights_sha256="a" * 64)
    with pytest.raises(ConfigError, match=r"perceptual_weights_sha256"):
        loss(perceptual_weight=1.0, perceptual_weights_path="w.pth", perceptual_weights_sha256="abc")


def test_the_cmgan_b_variants_ask_for_the_term_and_the_run_records_its_absence() -> None:
    from helpers.params import params_for_tests

    from inpnet.train.trainer import run_notes

    params = params_for_tests()
    for name in ("cmgan_b", "cmgan_b512"):
        loss = params.variant(name).train.loss
        assert loss.perceptual_weight > 0 and loss.perceptual_weights_path
    notes = run_notes(params.variant("cmgan_b"), 1)
    assert (
        notes["perceptual_loss"].startswith("off:") and "vgg19-dcbb9e9d.pth does not exist" in notes["perceptual_loss"]
    )
    assert "perceptual_loss" not in run_notes(params.variant("cmgan_s"), 1)  # the quickstart's asks for none
