"""Training masks: the weighted pattern mixture and the hole-ratio warm-up both samplers share."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from inpnet.errors import MaskError
from inpnet.masks.patterns import MAX_RATIO, PATTERNS, make_mask

__all__ = ["MaskMixture", "ramp_max_ratio", "stable_id_seed"]


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

    def _one(self, h: int, w: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
        pattern = self.names[int(rng.choice(len(self.names), p=self.probs))]
        ratio = float(rng.uniform(lo, hi)) if hi > lo else lo
        return make_mask(pattern, h, w, min(ratio, MAX_RATIO), rng, **self.presets.get(pattern, {}))
