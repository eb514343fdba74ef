"""Pictures in an evaluation report: metric-vs-ratio plots, the sample grid, saved outputs.

Matplotlib is imported inside :func:`plot_metric_by_ratio` with the non-interactive Agg
backend chosen there, so importing this module never touches a display or global state
beyond that call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["METRIC_LABELS", "plot_metric_by_ratio", "save_grid", "save_png", "to_uint8"]

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


def save_grid(rows: Mapping[str, Sequence[Sequence[torch.Tensor]]], path: Path, *, gap: int = 4) -> Path:
    """Sample grid: one row per pattern, each example as masked input | output | ground truth.

    Args:
        rows: pattern -> examples, each a (masked, output, truth) triple of (3, S, S) tensors.
        path: PNG to write.
    """
    from PIL import Image, ImageDraw

    rows = {p: list(ex) for p, ex in rows.items() if ex}
    if not rows:
        raise ValueError("save_grid: no examples to draw")
    size = next(iter(rows.values()))[0][0].shape[-1]
    per_row = max(len(ex) for ex in rows.values())
    label_w, header_h = 90, 18
    width = label_w + per_row * (3 * size + 2 * gap) + (per_row - 1) * 3 * gap
    height = header_h + len(rows) * (size + gap)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for k in range(per_row):
        x0 = label_w + k * (3 * size + 5 * gap)
        for j, title in enumerate(("masked", "output", "truth")):
            draw.text((x0 + j * (size + gap) + 4, 3), title, fill="black")
    for r, (pattern, examples) in enumerate(sorted(rows.items())):
        y = header_h + r * (size + gap)
        draw.text((4, y + size // 2 - 6), pattern, fill="black")
        for k, triple in enumerate(examples):
            x0 = label_w + k * (3 * size + 5 * gap)
            for j, tile in enumerate(triple):
                canvas.paste(Image.fromarray(to_uint8(tile)), (x0 + j * (size + gap), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
