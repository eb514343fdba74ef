"""Mask generators, the training mask mixture, and (re-exported) the evaluation mask bank.

Convention: a mask is a bool (H, W) array or a float (B, 1, H, W) tensor of 0/1 with
**True / 1 = hole**. Every generator is a pure function of ``(height, width, ratio, rng)``
(plus preset keyword arguments): the same arguments and the same generator state give the
same mask, and nothing reads the global RNG.

Patterns and what the hole ratio means for each:

- ``random``: MAE-style patches on a grid (``patch_size`` px, shrunk so the grid has at least
  8 x 8 cells); cells are taken in a random order until the hole is closest to ``ratio``.
- ``center``: one block in the middle; ``jitter`` varies its aspect ratio around the image's.
- ``corners``: four equal blocks in the corners, each at most half the image in each direction.
- ``edges``: a border band around a centered known rectangle.
- ``free_form``: brush strokes and boxes (thin / medium / thick, see :mod:`inpnet.masks_freeform`);
  ``preset="mixed"`` picks one of the three per mask.
- ``external``: masks read from a folder (see :mod:`inpnet.mask_bank`), not generated.

The geometric patterns hit the requested ratio within 0.02 (tested for every pattern at
several ratios and sizes >= 32 px); free-form aims at it and the achieved ratio is measured.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inpnet.errors import MaskError
from inpnet.masks_freeform import FREE_FORM_PRESETS, free_form_mask

__all__ = [
    "GEOMETRIC_PATTERNS",
    "MAX_RATIO",
    "PATTERNS",
    "BankMask",
    "MaskMixture",
    "hole_ratio",
    "load_bank",
    "make_mask",
    "read_mask_png",
    "write_bank",
]

MAX_RATIO = 0.9
GEOMETRIC_PATTERNS = ("random", "center", "corners", "edges")
PATTERNS = (*GEOMETRIC_PATTERNS, "free_form")  # the generated ones; "external" is read from disk


def hole_ratio(mask: np.ndarray) -> float:
    """Fraction of hole pixels of a bool (H, W) mask."""
    return float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0


# ------------------------------------------------------------------------ block sizing


def _block_dims(n: int, aspect: float, max_h: int, max_w: int) -> tuple[int, int]:
    """Integer (h, w) with h <= max_h, w <= max_w, h * w closest to ``n`` and h / w near ``aspect``.

    Among the sizes whose area is within half a percent (or one pixel) of ``n`` the one with
    the closest aspect ratio wins; if none is that close, the smallest area error wins.
    """
    if n <= 0:
        return 0, 0
    hs = np.arange(1, max_h + 1)
    ws = np.clip(np.rint(n / hs), 1, max_w).astype(np.int64)
    err = np.abs(hs * ws - n)
    tol = max(1.0, 0.005 * max_h * max_w)
    aspect_dev = np.abs(np.log(hs / ws) - math.log(aspect))
    good = err <= tol
    i = int(np.argmin(np.where(good, aspect_dev, np.inf))) if good.any() else int(np.argmin(err))
    return int(hs[i]), int(ws[i])


def _jittered_aspect(base: float, jitter: float, rng: np.random.Generator) -> float:
    # drawn even when jitter == 0 so every pattern consumes the generator the same way
    u = rng.uniform(-1.0, 1.0)
    return base * math.exp(u * math.log1p(jitter))


# ------------------------------------------------------------------- geometric patterns


def _random_patches(h: int, w: int, ratio: float, rng: np.random.Generator, patch_size: int = 16) -> np.ndarray:
    p = max(1, min(patch_size, h // 8, w // 8))
    rows, cols = math.ceil(h / p), math.ceil(w / p)
    cell_h = np.minimum(p, h - np.arange(rows) * p)  # last row/column may be partial
    cell_w = np.minimum(p, w - np.arange(cols) * p)
    areas = np.outer(cell_h, cell_w).ravel()  # (rows * cols,)
    order = rng.permutation(rows * cols)
    reached = np.concatenate([[0], np.cumsum(areas[order])])
    k = int(np.argmin(np.abs(reached - ratio * h * w)))
    cells = np.zeros(rows * cols, bool)
    cells[order[:k]] = True
    grid = cells.reshape(rows, cols)
    # (rows, cols) -> (rows * p, cols * p) -> cropped to (h, w)
    return np.repeat(np.repeat(grid, p, axis=0), p, axis=1)[:h, :w]


def _center(h: int, w: int, ratio: float, rng: np.random.Generator, jitter: float = 0.2) -> np.ndarray:
    aspect = _jittered_aspect(h / w, jitter, rng)
    bh, bw = _block_dims(int(round(ratio * h * w)), aspect, h, w)
    mask = np.zeros((h, w), bool)
    y0, x0 = (h - bh) // 2, (w - bw) // 2
    mask[y0 : y0 + bh, x0 : x0 + bw] = True
    return mask


def _corners(h: int, w: int, ratio: float, rng: np.random.Generator, jitter: float = 0.2) -> np.ndarray:
    n = int(round(ratio * h * w))
    mask = np.zeros((h, w), bool)
    left_to_fill = n
    for i, (top, left) in enumerate(((True, True), (True, False), (False, True), (False, False))):
        aspect = _jittered_aspect(h / w, jitter, rng)
        # blocks stay within their quadrant, so they never overlap; each block aims at an
        # equal share of what is still missing, so the rounding of one block is absorbed by the next
        bh, bw = _block_dims(int(round(left_to_fill / (4 - i))), aspect, h // 2, w // 2)
        left_to_fill -= bh * bw
        if bh == 0:
            continue
        rows = slice(0, bh) if top else slice(h - bh, h)
        cols = slice(0, bw) if left else slice(w - bw, w)
        mask[rows, cols] = True
    return mask


def _edges(h: int, w: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    known = h * w - int(round(ratio * h * w))
    ih, iw = _block_dims(known, h / w, h, w)
    mask = np.ones((h, w), bool)
    y0, x0 = (h - ih) // 2, (w - iw) // 2
    mask[y0 : y0 + ih, x0 : x0 + iw] = False
    return mask


def _free_form(h: int, w: int, ratio: float, rng: np.random.Generator, preset: str = "mixed") -> np.ndarray:
    if preset == "mixed":
        preset = str(rng.choice(sorted(FREE_FORM_PRESETS)))
    return free_form_mask(h, w, ratio, rng, preset=preset)


_GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "random": _random_patches,
    "center": _center,
    "corners": _corners,
    "edges": _edges,
    "free_form": _free_form,
}


def make_mask(pattern: str, height: int, width: int, ratio: float, rng: np.random.Generator, **preset: Any) -> np.ndarray:
    """A bool (height, width) mask of ``pattern`` covering about ``ratio`` (True = hole).

    Args:
        pattern: one of ``random, center, corners, edges, free_form``.
        height, width: mask size in pixels.
        ratio: requested hole fraction in [0, 0.9]; 0 gives an empty mask.
        rng: the only source of randomness.
        **preset: pattern options: ``patch_size`` (random), ``jitter`` (center, corners),
            ``preset`` = thin | medium | thick | mixed (free_form).
    """
    if pattern == "external":
        raise MaskError("pattern 'external' is read from a folder, not generated: use write_bank(external_dir=...)")
    if pattern not in _GENERATORS:
        raise MaskError(f"unknown mask pattern {pattern!r}; choose one of {list(PATTERNS)}")
    if height < 1 or width < 1:
        raise MaskError(f"mask size must be positive, got {height}x{width}")
    if not 0.0 <= ratio <= MAX_RATIO:
        raise MaskError(f"mask ratio must lie in [0, {MAX_RATIO}], got {ratio}")
    if ratio == 0.0:
        return np.zeros((height, width), bool)
    try:
        return _GENERATORS[pattern](height, width, ratio, rng, **preset)
    except TypeError as err:
        raise MaskError(f"bad options {sorted(preset)} for mask pattern {pattern!r}: {err}") from None


# ---------------------------------------------------------------------- training mixture


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
    :class:`inpnet.object_masks.ObjectMaskSampler`, not here.
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
            raise MaskError(f"train.masks.patterns needs non-negative weights with a positive sum, got {dict(cfg.patterns)}")
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
        if self.warmup_steps <= 0:
            return self.max_ratio
        t = min(1.0, max(0, step) / self.warmup_steps)
        return self.min_ratio + t * (self.max_ratio - self.min_ratio)

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


# The bank lives in its own module; it imports make_mask lazily, so this import is safe here.
from inpnet.mask_bank import BankMask, load_bank, read_mask_png, write_bank  # noqa: E402
