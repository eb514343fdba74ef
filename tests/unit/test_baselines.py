"""Classical baselines and method resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inpnet.config import InpNetModelConfig, ResolvedVariant, TrainConfig
from inpnet.errors import ConfigError
from inpnet.evaluate.baselines import BASELINES, BaselineInpainter, inpaint_array
from inpnet.evaluate.methods import ModelMethod, resolve_method


def _batch(b: int = 2, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2])  # (3, S, S) smooth
    image = (base[None] * 0.8 + 0.2 * torch.rand(b, 3, size, size, generator=g)).clamp(0, 1)
    mask = torch.zeros(b, 1, size, size)
    mask[0, :, 6:14, 8:18] = 1
    mask[1:, :, 2:5, :] = 1
    return image, mask


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_keeps_known_pixels_exactly_and_fills_the_hole(name: str) -> None:
    image, mask = _batch()
    poisoned = torch.where(mask > 0, torch.ones_like(image), image)  # hole pixels carry a value to forget
    out = BaselineInpainter(name)(poisoned, mask)
    assert out.shape == image.shape and out.dtype == image.dtype
    known = (mask == 0).expand_as(image)
    assert torch.equal(out[known], poisoned[known])
    hole = ~known
    assert (out[hole] - poisoned[hole]).abs().mean() > 0.05  # the white fill was replaced
    assert out.min() >= 0 and out.max() <= 1
    # the fill is a plausible continuation: closer to the true hole content than the poison was
    assert (out[hole] - image[hole]).abs().mean() < (poisoned[hole] - image[hole]).abs().mean()


@pytest.mark.parametrize("name", BASELINES)
def test_empty_and_full_masks(name: str) -> None:
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    assert np.array_equal(inpaint_array(name, img, np.zeros((8, 8), bool)), img)
    full = inpaint_array(name, img, np.ones((8, 8), bool))
    assert np.allclose(full, 0.5)


def test_the_config_names_every_baseline() -> None:
    from typing import get_args

    from inpnet.config import Baseline

    assert get_args(Baseline) == BASELINES


def test_harmonic_baseline_is_the_harmonic_prefill_per_image_or_batched() -> None:
    from inpnet.models.prefill import prefill

    image, mask = _batch(b=3)
    batched = BaselineInpainter("harmonic")(image, mask)
    assert torch.equal(batched, prefill("harmonic", torch.where(mask > 0.5, 0.0, image), mask))
    for i in range(3):
        one = inpaint_array("harmonic", image[i].permute(1, 2, 0).numpy(), mask[i, 0].numpy() > 0.5)
        assert np.allclose(one, batched[i].permute(1, 2, 0).numpy(), atol=1e-6)


def test_thread_workers_match_serial() -> None:
    image, mask = _batch(b=4)
    with BaselineInpainter("telea", workers=2) as parallel:
        a = parallel(image, mask)
    b = BaselineInpainter("telea", workers=1)(image, mask)
    assert torch.equal(a, b)


@pytest.mark.slow
def test_biharmonic_process_workers_match_serial() -> None:
    image, mask = _batch(b=3, size=16)
    with BaselineInpainter("biharmonic", workers=2) as parallel:
        a = parallel(image, mask)
    assert torch.equal(a, BaselineInpainter("biharmonic")(image, mask))


def test_opencv_radius_is_used() -> None:
    image, mask = _batch(b=1, size=32)
    a = BaselineInpainter("telea", radius=1)(image, mask)
    b = BaselineInpainter("telea", radius=9)(image, mask)
    assert not torch.equal(a, b)


def test_resolve_method_baselines_and_bad_spec(tmp_path) -> None:
    m = resolve_method("navier_stokes", radius=5, workers=3)
    assert isinstance(m, BaselineInpainter) and m.name == "navier_stokes"
    assert m.settings() == {"kind": "baseline", "workers": 3, "radius": 5}
    with pytest.raises(ConfigError, match=r"nope.*models:/NAME@ALIAS"):
        resolve_method("nope")
    with pytest.raises(ConfigError, match="missing"):
        resolve_method(str(tmp_path / "missing"))


def test_resolve_method_checkpoint_folder(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inpnet.train import checkpoint

    variant = ResolvedVariant(name="tiny", model=InpNetModelConfig(img_size=32), train=TrainConfig())

    class Half(torch.nn.Module):
        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return torch.full_like(image, 0.5)

    calls = {}

    def fake_load_model(ckpt_dir, *, ema=True, device="cpu"):
        calls.update(dir=ckpt_dir, ema=ema, device=device)
        return Half(), variant

    monkeypatch.setattr(checkpoint, "load_model", fake_load_model)
    meta = '{"step": 3, "precision": "bf16", "notes": {"perceptual_loss": "off: no weights file"}}'
    (tmp_path / checkpoint.META_FILE).write_text(meta)  # what training writes
    m = resolve_method(str(tmp_path))
    assert isinstance(m, ModelMethod) and m.name == "tiny" and m.image_size == 32
    assert calls == {"dir": tmp_path, "ema": True, "device": "cpu"}
    image, mask = _batch(b=2, size=32)
    assert torch.equal(m(image, mask), torch.full_like(image, 0.5))
    assert m.settings()["variant"] == "tiny"
    assert m.settings()["trained_precision"] == "bf16"  # the summary's Machine line says it
    assert m.settings()["recipe"] == {"perceptual_loss": "off: no weights file"}  # in the report's method_settings


def test_resolve_method_registry_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    import inpnet.inpaint as registry

    class FakeInpainter:  # the registry's tiling Inpainter: a callable holding its network
        model = torch.nn.Linear(1, 1)

        def __call__(self, image, mask):
            return image * 0 + 0.25

    def fake_load_inpainter(uri, *, device="cpu", tracking_uri=None):
        return FakeInpainter(), {"family": "inpnet", "img_size": 128, "version": "3", "extra": {"not": "a scalar"}}

    monkeypatch.setattr(registry, "load_inpainter", fake_load_inpainter)
    m = resolve_method("models:/inpnet@champion")
    assert isinstance(m, ModelMethod) and m.name == "models:/inpnet@champion"
    assert m.image_size is None  # the registry's Inpainter tiles any size
    assert m.settings()["version"] == "3" and "extra" not in m.settings()
    assert len(m.settings()["weights_sha256"]) == 64  # the network's hash, for provenance
    image, mask = _batch(b=1, size=16)
    assert torch.allclose(m(image, mask), torch.full_like(image, 0.25))


def test_flat_fill_is_the_known_pixels_mean_colour() -> None:
    from inpnet.evaluate.baselines import inpaint_array

    rng = np.random.default_rng(0)
    image = rng.uniform(size=(12, 10, 3)).astype(np.float32)
    hole = np.zeros((12, 10), dtype=bool)
    hole[3:9, 2:7] = True
    out = inpaint_array("flat", image, hole)
    assert np.array_equal(out[~hole], image[~hole])
    np.testing.assert_allclose(out[hole], np.broadcast_to(image[~hole].mean(axis=0), out[hole].shape), atol=1e-6)
