"""Training masks and evaluation masks come from different random streams, and both say which
generator, options and seed made them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inpnet.config import TrainConfig, TrainMasksConfig, load_params
from inpnet.errors import MaskError
from inpnet.masks import MaskMixture, describe_training_masks, make_mask, training_mask_rng, write_bank
from inpnet.masks.bank import _cell_seed, mask_generators
from inpnet.masks.patterns import pattern_options


def test_pattern_options_name_every_parameter_a_generator_draws_with() -> None:
    assert pattern_options("free_form") == {"preset": "mixed"}
    assert pattern_options("random", patch_size=8) == {"patch_size": 8}
    assert pattern_options("center") == {"jitter": 0.2} and pattern_options("edges") == {}
    with pytest.raises(MaskError, match=r"bad options \['size'\] for mask pattern 'random'"):
        pattern_options("random", size=3)


def test_the_bank_manifest_names_its_generators(tmp_path: Path) -> None:
    manifest = write_bank(
        tmp_path / "bank",
        size=32,
        patterns=["free_form", "random"],
        ratios=[0.1],
        per_cell=1,
        seed=7,
        presets={"random": {"patch_size": 8}},
    )
    gens = json.loads(manifest.read_text())["generators"]
    assert gens == mask_generators(tmp_path / "bank")
    assert gens["random"] == {
        "generator": "inpnet.masks.patterns.make_mask('random')",
        "options": {"patch_size": 8},
        "rng": "numpy default_rng([seed, crc32(pattern), round(ratio * 10000), index])",
        "seed": 7,
    }
    assert mask_generators(tmp_path) == {"external": {"generator": "mask files", "source": str(tmp_path)}}


def test_training_masks_describe_their_generator_and_stream() -> None:
    train = TrainConfig(seed=3, masks=TrainMasksConfig(patterns={"free_form": 1.0, "random": 3.0}, warmup_steps=5))
    d = describe_training_masks(train)
    assert d["patterns"] == {"free_form": 0.25, "random": 0.75} and d["options"]["random"] == {"patch_size": 16}
    assert d["rng"] == "numpy default_rng([train.seed, rank])" and d["seed"] == 3 and d["warmup_steps"] == 5
    fixed = describe_training_masks(
        train.model_copy(update={"masks": train.masks.model_copy(update={"dynamic": False})})
    )
    assert fixed["rng"] == "numpy default_rng([train.seed, sha256(sample key)])"
    # what the description names is what the trainer draws from
    a = training_mask_rng(3, 1).random(4)
    np.testing.assert_array_equal(a, np.random.default_rng([3, 1]).random(4))


def _bank_masks(params_path: Path) -> dict[str, list[np.ndarray]]:
    m = load_params(params_path).masks
    out: dict[str, list[np.ndarray]] = {}
    for pattern in m.patterns:
        opts = {"patch_size": m.random_patch_size} if pattern == "random" else {}
        for ratio in m.ratios:
            for i in range(m.per_cell):
                rng = np.random.default_rng(_cell_seed(m.seed, pattern, ratio, i))
                out.setdefault(pattern, []).append(make_mask(pattern, m.size, m.size, ratio, rng, **opts))
    return out


def test_the_quickstart_never_trains_on_its_evaluation_masks(repo_root: Path) -> None:
    """masks.seed and train.seed are both 0, yet the streams differ: no irregular training mask of
    the quickstart's first steps equals, or nearly equals, one of the bank's (a centred box of a
    given area can, by construction, and is not checked)."""
    params = load_params(repo_root / "params.yaml")
    bank = _bank_masks(repo_root / "params.yaml")
    v = params.variant(params.pipeline.variants[0]).train
    assert v.seed == params.masks.seed == 0  # the case a reader worries about
    mixture = MaskMixture(v.masks.model_copy(update={"patterns": {"free_form": 1.0, "random": 1.0}}), seed=v.seed)
    rng = training_mask_rng(v.seed, 0)
    size = params.masks.size
    flat = {p: np.stack([b.ravel() for b in bank[p]]) for p in ("free_form", "random")}
    worst = 0.0
    for step in range(0, 200, 20):  # ramp included: every ratio the bank has is reached
        for t in mixture.sample(8, size, size, step=step, generator=rng).numpy()[:, 0] > 0.5:
            if not t.any():
                continue
            for f in flat.values():
                inter, union = (f & t.ravel()).sum(1), (f | t.ravel()).sum(1)
                worst = max(worst, float((inter / union).max()))
    assert worst < 0.9, worst
    # and no bank seed sequence is a training stream: numpy pads [seed, rank] to [seed, rank, 0, 0], and the
    # bank's second word is crc32(pattern), which no rank reaches
    for pattern in params.masks.patterns:
        assert _cell_seed(0, pattern, 0.1, 0)[1] > 1 << 24
