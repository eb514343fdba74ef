"""Mask generators and the training mixture: ratios, shapes, determinism, purity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inpnet.config import TrainMasksConfig
from inpnet.errors import MaskError
from inpnet.images import hole_ratio
from inpnet.masks import GEOMETRIC_PATTERNS, PATTERNS, MaskMixture, make_mask

SIZES = [(32, 32), (64, 48), (100, 140), (128, 128), (256, 256)]
RATIOS = [0.02, 0.1, 0.25, 0.5, 0.75, 0.9]


@pytest.mark.parametrize("pattern", GEOMETRIC_PATTERNS)
def test_geometric_patterns_hit_the_ratio_within_002(pattern: str) -> None:
    for h, w in SIZES:
        for ratio in RATIOS:
            for seed in range(2):
                mask = make_mask(pattern, h, w, ratio, np.random.default_rng(seed))
                assert mask.shape == (h, w) and mask.dtype == bool
                assert abs(hole_ratio(mask) - ratio) <= 0.02, (pattern, h, w, ratio, hole_ratio(mask))


@pytest.mark.parametrize("preset", ["thin", "medium", "thick", "mixed"])
def test_free_form_aims_at_the_ratio(preset: str) -> None:
    for ratio in (0.1, 0.3, 0.5, 0.7):
        mask = make_mask("free_form", 128, 128, ratio, np.random.default_rng(3), preset=preset)
        assert mask.dtype == bool and mask.shape == (128, 128)
        assert abs(hole_ratio(mask) - ratio) <= 0.03, (preset, ratio, hole_ratio(mask))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_ratio_zero_is_empty_and_masks_are_deterministic(pattern: str) -> None:
    assert not make_mask(pattern, 40, 50, 0.0, np.random.default_rng(0)).any()
    a = make_mask(pattern, 64, 64, 0.4, np.random.default_rng(7))
    b = make_mask(pattern, 64, 64, 0.4, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_random_and_free_form_vary_with_the_seed() -> None:
    for pattern in ("random", "free_form"):
        a = make_mask(pattern, 64, 64, 0.4, np.random.default_rng(1))
        b = make_mask(pattern, 64, 64, 0.4, np.random.default_rng(2))
        assert (a != b).any(), pattern


def test_generators_never_touch_the_global_rng() -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    torch_before = torch.random.get_rng_state().clone()
    for pattern in PATTERNS:
        make_mask(pattern, 64, 64, 0.5, np.random.default_rng(0))
    assert (np.random.get_state()[1] == before).all()
    assert torch.equal(torch.random.get_rng_state(), torch_before)


def test_pattern_shapes() -> None:
    rng = np.random.default_rng(0)
    center = make_mask("center", 64, 64, 0.3, rng)
    assert center[32, 32] and not center[0, 0]
    corners = make_mask("corners", 64, 64, 0.3, rng)
    assert corners[0, 0] and corners[0, 63] and corners[63, 0] and corners[63, 63] and not corners[32, 32]
    edges = make_mask("edges", 64, 64, 0.3, rng)
    assert edges[0, :].all() and edges[:, 0].all() and edges[-1, :].all() and not edges[32, 32]
    patches = make_mask("random", 128, 128, 0.5, rng, patch_size=16)
    blocks = patches.reshape(8, 16, 8, 16)  # (rows, p, cols, p): every grid cell is all hole or all known
    assert (blocks.all(axis=(1, 3)) | ~blocks.any(axis=(1, 3))).all()


def test_bad_arguments_raise_mask_error() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(MaskError, match="ratio"):
        make_mask("center", 32, 32, 0.95, rng)
    with pytest.raises(MaskError, match="unknown mask pattern"):
        make_mask("stars", 32, 32, 0.5, rng)
    with pytest.raises(MaskError, match="folder"):
        make_mask("external", 32, 32, 0.5, rng)
    with pytest.raises(MaskError, match="bad options"):
        make_mask("center", 32, 32, 0.5, rng, patch_size=4)
    with pytest.raises(ValueError, match="preset"):
        make_mask("free_form", 32, 32, 0.5, rng, preset="huge")


# ------------------------------------------------------------------------------ mixture


def _mixture(**kw) -> MaskMixture:
    return MaskMixture(TrainMasksConfig(**kw))


def test_mixture_shape_values_and_determinism() -> None:
    mix = _mixture(min_ratio=0.1, max_ratio=0.6)
    a = mix.sample(6, 32, 48, step=0, generator=np.random.default_rng(5))
    b = mix.sample(6, 32, 48, step=0, generator=np.random.default_rng(5))
    assert a.shape == (6, 1, 32, 48) and a.dtype == torch.float32
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, b)
    ratios = a.mean(dim=(1, 2, 3))
    assert (ratios >= 0.1 - 0.03).all() and (ratios <= 0.6 + 0.03).all()


def test_mixture_warmup_ramps_the_ratio() -> None:
    mix = _mixture(min_ratio=0.0, max_ratio=0.8, warmup_steps=100)
    assert mix.current_max_ratio(0) == 0.0
    assert mix.current_max_ratio(50) == pytest.approx(0.4)
    assert mix.current_max_ratio(1000) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    early = mix.sample(16, 32, 32, step=10, generator=rng).mean(dim=(1, 2, 3))
    late = mix.sample(16, 32, 32, step=100, generator=rng).mean(dim=(1, 2, 3))
    assert early.max() <= 0.08 + 0.03
    assert late.mean() > early.mean()


def test_mixture_weights_pick_patterns() -> None:
    mix = _mixture(patterns={"center": 1.0, "edges": 0.0}, min_ratio=0.3, max_ratio=0.3)
    masks = mix.sample(4, 32, 32, step=0, generator=np.random.default_rng(0))
    assert (masks[:, 0, 16, 16] == 1).all() and (masks[:, 0, 0, 0] == 0).all()  # center blocks only
    with pytest.raises(MaskError, match="unknown patterns"):
        _mixture(patterns={"blobs": 1.0})
    with pytest.raises(MaskError, match="positive sum"):
        _mixture(patterns={"center": 0.0})


def test_fixed_masks_follow_the_sample_key() -> None:
    mix = _mixture(dynamic=False, min_ratio=0.2, max_ratio=0.7, warmup_steps=100)
    a = mix.sample(3, 32, 32, step=0, generator=np.random.default_rng(0), keys=["x", "y", "z"])
    b = mix.sample(3, 32, 32, step=500, generator=np.random.default_rng(9), keys=["z", "x", "y"])
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[2]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])
    with pytest.raises(MaskError, match="key"):
        mix.sample(2, 32, 32, step=0, generator=np.random.default_rng(0))
