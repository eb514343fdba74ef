"""The generated hole patterns: ``random``, ``center``, ``corners``, ``edges``, ``free_form``.

Each generator is a pure function of ``(height, width, ratio, rng)`` plus preset keyword
arguments; :func:`make_mask` dispatches on the pattern name. See :mod:`inpnet.masks` for
what the hole ratio means for each pattern.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from inpnet.errors import MaskError
from inpnet.masks.freeform import FREE_FORM_PRESETS, free_form_mask

__all__ = ["GEOMETRIC_PATTERNS", "MAX_RATIO", "PATTERNS", "make_mask", "pattern_options"]

MAX_RATIO = 0.9
GEOMETRIC_PATTERNS = ("random", "center", "corners", "edges")
PATTERNS = (*GEOMETRIC_PATTERNS, "free_form")  # the generated ones; "external" is read from disk


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


def pattern_options(pattern: str, **preset: Any) -> dict[str, Any]:
    """Every option ``make_mask(pattern, ...)`` draws with: its defaults, overridden by ``preset``.

    What a report names as the generator's parameters (e.g. ``{"preset": "mixed"}`` for free_form).
    """
    if pattern not in _GENERATORS:
        raise MaskError(f"unknown mask pattern {pattern!r}; choose one of {list(PATTERNS)}")
    params = list(inspect.signature(_GENERATORS[pattern]).parameters.values())[4:]  # after (h, w, ratio, rng)
    unknown = sorted(set(preset) - {q.name for q in params})
    if unknown:
        raise MaskError(f"bad options {unknown} for mask pattern {pattern!r}; it takes {[q.name for q in params]}")
    return {q.name: preset.get(q.name, q.default) for q in params}


def make_mask(
    pattern: str, height: int, width: int, ratio: float, rng: np.random.Generator, **preset: Any
) -> np.ndarray:
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
