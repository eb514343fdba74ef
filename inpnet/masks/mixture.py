"""Training masks: the weighted pattern mixture and the hole-ratio warm-up both samplers share.

Training masks and the evaluation bank never share a random stream. The trainer draws rank
``r``'s masks from ``default_rng([train.seed, r])`` (:func:`training_mask_rng`; the
fixed-mask ablation from ``default_rng([train.seed, sha256(sample key)])``), the bank mask
``i`` of a cell from ``default_rng([masks.seed, crc32(pattern), round(ratio * 10000), i])``:
different seed sequences whatever the two seeds are, so equal seeds (both 0 by default) do
not give equal masks. Low-entropy patterns can still coincide by construction (a centred
box of a given area); :func:`describe_training_masks` and the bank's manifest say which
generator, options and seed made each, for the reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from inpnet.errors import MaskError
from inpnet.masks.patterns import MAX_RATIO, PATTERNS, make_mask, pattern_options

__all__ = ["MaskMixture", "describe_training_masks", "ramp_max_ratio", "stable_id_seed", "training_mask_rng"]

TRAIN_RNG = "numpy default_rng([train.seed, rank])"  # what training_mask_rng does
FIXED_RNG = "numpy default_rng([train.seed, sha256(sample key)])"  # MaskMixture, dynamic=False


def training_mask_rng(seed: int, rank: int) -> np.random.Generator:
    """The generator rank ``rank`` draws its training masks from (``train.seed`` = ``seed``)."""
    return np.random.default_rng([seed, rank])


def ramp_max_ratio(step: int, min_ratio: float, max_ratio: float, warmup_steps: int) -> float:
    """The upper end of the training hole-ratio range at ``step``: a linear ramp from
    ``min_ratio`` at step 0 to ``max_ratio`` at ``warmup_steps`` (no ramp when that is 0)."""
    if warmup_steps <= 0:
        return max_ratio
    t = min(1.0, max(0, step) / warmup_steps)
    return min_ratio + t * (max_ratio - min_ratio)


def stable_id_seed(sample_id: str | int) -> int:
    """A 64-bit integer from a sample id that is the same in every process and Python run."""
    return int.from_bytes(hashlib.sha256(str(sample_id).encode()).digest()[:8], "little")


class MaskMixture:
    """Training masks: a weighted mixture of patterns with a linear ratio ramp (mask warm-up).

    Each sample picks a pattern with probability proportional to its weight and a ratio
    uniformly in ``[min_ratio, current_max]``, where ``current_max`` grows linearly from
    ``min_ratio`` to ``max_ratio`` over ``warmup_steps`` (no ramp when it is 0).

    ``dynamic=False`` (the fixed-mask ablation) gives every image one mask for the whole run:
    the pattern, ratio and shape come from a generator seeded by ``(seed, sha256(id))``, where
    ``id`` is the sample's key from the loader (``keys=batch["key"]``). The ratio is drawn over the full
    ``[min_ratio, max_ratio]`` range and the warm-up does not apply: a fixed mask cannot grow.

    Object-shaped holes (``object_dir``, CM-GAN) are drawn by
    :class:`inpnet.masks.objects.ObjectMaskSampler`, not here.
    """

    def __init__(self, cfg: Any, *, seed: int = 0, presets: dict[str, dict[str, Any]] | None = None) -> None:
        """Args:
        cfg: a :class:`inpnet.config.TrainMasksConfig`.
        seed: seeds the per-id generators of ``dynamic=False``; unused otherwise.
        presets: per-pattern options for :func:`make_mask`; default
            ``{"random": {"patch_size": cfg.random_patch_size}}``.
        """
        weights = {k: float(v) for k, v in cfg.patterns.items() if float(v) > 0}
        unknown = sorted(set(cfg.patterns) - set(PATTERNS))
        if unknown:
            raise MaskError(f"train.masks.patterns: unknown patterns {unknown}; choose from {list(PATTERNS)}")
        if not weights or any(float(v) < 0 for v in cfg.patterns.values()):
            raise MaskError(
                f"train.masks.patterns needs non-negative weights with a positive sum, got {dict(cfg.patterns)}"
            )
        if cfg.min_ratio > cfg.max_ratio:
            raise MaskError(f"train.masks.min_ratio {cfg.min_ratio} exceeds max_ratio {cfg.max_ratio}")
        self.names = sorted(weights)
        total = sum(weights.values())
        self.probs = np.array([weights[n] / total for n in self.names])
        self.min_ratio, self.max_ratio = float(cfg.min_ratio), float(cfg.max_ratio)
        self.warmup_steps = int(cfg.warmup_steps)
        self.dynamic = bool(cfg.dynamic)
        self.seed = seed
        self.presets = presets if presets is not None else {"random": {"patch_size": int(cfg.random_patch_size)}}

    def current_max_ratio(self, step: int) -> float:
        """The upper end of the ratio range at ``step`` (the warm-up ramp)."""
        return ramp_max_ratio(step, self.min_ratio, self.max_ratio, self.warmup_steps)

    def sample(
        self,
        batch: int,
        height: int,
        width: int,
        step: int,
        generator: np.random.Generator,
        keys: Sequence[str | int] | None = None,
    ) -> Any:
        """A float (batch, 1, height, width) tensor of 0/1 masks, 1 = hole.

        ``keys`` (the loader's sample keys) is required when ``dynamic=False``.
        """
        import torch

        if self.dynamic:
            hi = self.current_max_ratio(step)
            masks = [self._one(height, width, self.min_ratio, hi, generator) for _ in range(batch)]
        else:
            if keys is None or len(keys) != batch:
                raise MaskError(
                    f"train.masks.dynamic=false needs one sample key per image (the loader's 'key'), got "
                    f"{None if keys is None else len(keys)} keys for a batch of {batch}"
                )
            masks = []
            for sample_id in keys:
                rng = np.random.default_rng([self.seed, stable_id_seed(sample_id)])
                masks.append(self._one(height, width, self.min_ratio, self.max_ratio, rng))
        stacked = np.stack(masks)  # (B, H, W) bool
        return torch.from_numpy(stacked).to(torch.float32).unsqueeze(1)  # (B, 1, H, W)

    def describe(self) -> dict[str, Any]:
        """The generator, its options and its seeding, as a report names them."""
        return {
            "generator": "inpnet.masks.MaskMixture",
            "patterns": {n: round(float(p), 6) for n, p in zip(self.names, self.probs, strict=True)},
            "options": {n: pattern_options(n, **self.presets.get(n, {})) for n in self.names},
            "ratio": [self.min_ratio, self.max_ratio],
            "warmup_steps": self.warmup_steps,
            "dynamic": self.dynamic,
            "rng": TRAIN_RNG if self.dynamic else FIXED_RNG,
            "seed": self.seed,
        }

    def _one(self, h: int, w: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
        pattern = self.names[int(rng.choice(len(self.names), p=self.probs))]
        ratio = float(rng.uniform(lo, hi)) if hi > lo else lo
        return make_mask(pattern, h, w, min(ratio, MAX_RATIO), rng, **self.presets.get(pattern, {}))


def describe_training_masks(train: Any) -> dict[str, Any]:
    """What made a variant's training masks (``train``: its :class:`inpnet.config.TrainConfig`).

    With ``masks.object_dir`` a share ``object_prob`` of the holes are object-shaped
    (:class:`inpnet.masks.objects.ObjectMaskSampler`), the rest come from the mixture.
    """
    out = MaskMixture(train.masks, seed=train.seed).describe()
    if train.masks.object_dir:
        out["objects"] = {
            "generator": "inpnet.masks.objects.ObjectMaskSampler",
            "object_dir": str(train.masks.object_dir),
            "object_prob": float(train.masks.object_prob),
        }
    return out
