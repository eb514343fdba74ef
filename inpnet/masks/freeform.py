"""Free-form masks: brush strokes and boxes, drawn the way LaMa and CoModGAN draw them.

A stroke is a polyline of a few segments with random turns, drawn with a round brush; a box
is an axis-aligned rectangle. The three presets follow LaMa's ``random_{thin,medium,thick}_256``
generators (``saicinpainting/training/data/masks.py``); their lengths are in pixels at 256 px
and are scaled by ``min(height, width) / 256``.

Unlike LaMa, which draws a random number of strokes and lets the hole ratio fall where it
may, we aim at a requested ratio: shapes are added one at a time until the hole covers
``ratio``; a shape that would overshoot by more than the tolerance is redrawn thinner or
dropped. The achieved ratio is whatever the drawing reached and is measured by the caller
(:func:`inpnet.images.hole_ratio`), never assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["FREE_FORM_PRESETS", "FreeFormPreset", "free_form_mask"]


@dataclass(frozen=True)
class FreeFormPreset:
    """Stroke and box sizes in pixels at 256 px (LaMa's irregular and box generator kwargs)."""

    max_len: int
    max_width: int
    max_angle: float = 4.0
    max_vertices: int = 5
    box_proba: float = 0.0
    bbox_min_size: int = 10
    bbox_max_size: int = 50


FREE_FORM_PRESETS: dict[str, FreeFormPreset] = {
    "thin": FreeFormPreset(max_len=40, max_width=10),
    "medium": FreeFormPreset(max_len=100, max_width=50, box_proba=0.3, bbox_min_size=10, bbox_max_size=50),
    "thick": FreeFormPreset(max_len=200, max_width=100, box_proba=0.3, bbox_min_size=30, bbox_max_size=150),
}

_TOLERANCE = 0.01  # accept a finished mask this close to the target
_MAX_SHAPES = 2000  # safety bound on drawing attempts per mask
_MAX_RETRIES = 6  # thinner redraws of an overshooting shape before it is dropped


def free_form_mask(
    height: int,
    width: int,
    ratio: float,
    rng: np.random.Generator,
    preset: str = "medium",
) -> np.ndarray:
    """Strokes (and boxes, per preset) until the hole covers about ``ratio`` of the image.

    Returns a bool (H, W) array, True = hole. Ratio 0 gives an empty mask.
    """
    if preset not in FREE_FORM_PRESETS:
        raise ValueError(f"free_form preset {preset!r} unknown; choose one of {sorted(FREE_FORM_PRESETS)}")
    p = FREE_FORM_PRESETS[preset]
    canvas = np.zeros((height, width), np.uint8)
    total = height * width
    target = int(round(ratio * total))
    if target == 0:
        return canvas.astype(bool)
    scale = min(height, width) / 256.0
    filled = 0
    for _ in range(_MAX_SHAPES):
        if filled >= target - _TOLERANCE * total:
            break
        draw_box = rng.random() < p.box_proba
        shrink = 1.0
        for _retry in range(_MAX_RETRIES):
            trial = canvas.copy()
            if draw_box:
                _draw_box(trial, rng, p, scale * shrink)
            else:
                _draw_stroke(trial, rng, p, scale, shrink)
            new = int(np.count_nonzero(trial))
            if new <= target + _TOLERANCE * total:
                canvas, filled = trial, new
                break
            shrink *= 0.5  # overshoot: try a smaller version of the same kind of shape
    return canvas.astype(bool)


def _draw_stroke(canvas: np.ndarray, rng: np.random.Generator, p: FreeFormPreset, scale: float, shrink: float) -> None:
    """One LaMa polyline: 1..max_vertices segments with alternating random turns."""
    h, w = canvas.shape
    x, y = int(rng.integers(w)), int(rng.integers(h))
    brush = max(1, int(round((5 + rng.integers(p.max_width)) * scale * shrink)))
    for i in range(1 + int(rng.integers(p.max_vertices))):
        angle = 0.01 + rng.uniform(0, p.max_angle)
        if i % 2 == 0:
            angle = 2 * math.pi - angle
        length = (10 + rng.integers(p.max_len)) * scale * max(shrink, 0.25)
        nx = int(np.clip(x + length * math.sin(angle), 0, w - 1))
        ny = int(np.clip(y + length * math.cos(angle), 0, h - 1))
        cv2.line(canvas, (x, y), (nx, ny), 1, thickness=brush)
        x, y = nx, ny


def _draw_box(canvas: np.ndarray, rng: np.random.Generator, p: FreeFormPreset, scale: float) -> None:
    h, w = canvas.shape
    lo = max(1, int(p.bbox_min_size * scale))
    hi = max(lo + 1, int(p.bbox_max_size * scale))
    bw = min(w, int(rng.integers(lo, hi)))
    bh = min(h, int(rng.integers(lo, hi)))
    x0 = int(rng.integers(0, w - bw + 1))
    y0 = int(rng.integers(0, h - bh + 1))
    canvas[y0 : y0 + bh, x0 : x0 + bw] = 1
