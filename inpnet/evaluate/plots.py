"""Pictures in an evaluation report: metric-vs-ratio plots, the sample grid, saved outputs.

Matplotlib is imported inside :func:`plot_metric_by_ratio` with the non-interactive Agg
backend chosen there, so importing this module never touches a display or global state
beyond that call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "METRIC_LABELS",
    "GridExample",
    "GridRow",
    "grid_tile_origin",
    "plot_metric_by_ratio",
    "save_grid",
    "save_png",
    "to_uint8",
]

METRIC_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "fid": "FID", "kid": "KID"}


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounding to the nearest level."""
    arr = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, 3)
    return np.rint(arr * 255.0).astype(np.uint8)


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a (3, H, W) image in [0, 1] as an 8-bit RGB PNG (parent folders created)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)


def plot_metric_by_ratio(
    series: Mapping[str, Mapping[str, Mapping[str, Mapping[str, object]]]],
    metric: str,
    path: Path,
    *,
    references: Sequence[str] = (),
) -> Path:
    """One panel per pattern, one line per method: ``metric`` against hole ratio.

    Args:
        series: method name -> the ``buckets`` section of its metrics.json
            (pattern -> ratio "%.2f" -> {metric: value, ...}).
        metric: ``psnr`` or ``ssim`` (any bucket key works).
        path: PNG to write.
        references: method names drawn dashed (the baselines).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    patterns = sorted({p for buckets in series.values() for p in buckets})
    ncols = min(len(patterns), 3) or 1
    nrows = max(1, -(-len(patterns) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False, sharey=True)
    for ax, pattern in zip(axes.flat, patterns, strict=False):
        for name, buckets in series.items():
            cells = buckets.get(pattern, {})
            points = sorted((float(r), v[metric]) for r, v in cells.items() if v.get(metric) is not None)
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            style = "--" if name in references else "-"
            ax.plot(xs, ys, style, marker="o", markersize=4, label=name)
        ax.set_title(pattern)
        ax.set_xlabel("hole ratio")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    for ax in list(axes.flat)[len(patterns) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class GridExample:
    """One example of the sample grid: (masked input, output, ground truth), each (3, S, S), and
    the caption drawn above it (e.g. its PSNR, hole ratio and image)."""

    tiles: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    caption: str = ""


@dataclass(frozen=True)
class GridRow:
    """One row of the sample grid: a label in the left column (lines split on ``\\n``) and its examples."""

    label: str
    examples: Sequence[GridExample]


GRID_TITLES = ("masked", "output", "truth")
_LABEL_W, _HEADER_H, _CAPTION_H = 90, 18, 14  # px: the label column, the titles, a caption line


def grid_tile_origin(row: int, example: int, tile: int, size: int, *, gap: int = 4) -> tuple[int, int]:
    """(x, y) of the top-left pixel of tile ``tile`` (0 masked, 1 output, 2 truth) of example
    ``example`` in row ``row`` of a :func:`save_grid` image with ``size`` px tiles."""
    block_w = 3 * size + 5 * gap  # one example: three tiles and the space to the next example
    row_h = _CAPTION_H + size + gap
    return _LABEL_W + example * block_w + tile * (size + gap), _HEADER_H + row * row_h + _CAPTION_H


def save_grid(rows: Sequence[GridRow], path: Path, *, gap: int = 4) -> Path:
    """Sample grid: one row per :class:`GridRow`, each example as masked input | output | ground truth
    under its caption, the row's label on the left.

    Args:
        rows: the rows, top to bottom; rows without examples are left out.
        path: PNG to write.

    Raises:
        ValueError: no row has an example, or the tiles are not all (3, S, S) of one size S.
    """
    from PIL import Image, ImageDraw

    rows = [r for r in rows if r.examples]
    if not rows:
        raise ValueError("save_grid: no examples to draw")
    size = rows[0].examples[0].tiles[0].shape[-1]
    for checked in rows:
        for ex in checked.examples:
            shapes = {tuple(t.shape) for t in ex.tiles}
            if shapes != {(3, size, size)}:
                raise ValueError(
                    f"save_grid: row {checked.label!r} has tiles of shapes {sorted(shapes)}, expected (3, {size}, {size})"
                )
    per_row = max(len(r.examples) for r in rows)
    right, bottom = grid_tile_origin(len(rows) - 1, per_row - 1, 2, size, gap=gap)
    canvas = Image.new("RGB", (right + size, bottom + size + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for k in range(per_row):
        for j, title in enumerate(GRID_TITLES):
            draw.text((grid_tile_origin(0, k, j, size, gap=gap)[0] + 4, 3), title, fill="black")
    for r, row in enumerate(rows):
        y = grid_tile_origin(r, 0, 0, size, gap=gap)[1]
        lines = row.label.split("\n")
        for i, line in enumerate(lines):
            draw.text((4, y + size // 2 - 6 * len(lines) + 12 * i), line, fill="black")
        for k, example in enumerate(row.examples):
            x0 = grid_tile_origin(r, k, 0, size, gap=gap)[0]
            draw.text((x0 + 2, y - _CAPTION_H + 1), example.caption, fill="black")
            for j, tile in enumerate(example.tiles):
                canvas.paste(Image.fromarray(to_uint8(tile)), grid_tile_origin(r, k, j, size, gap=gap))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
