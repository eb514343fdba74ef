"""Score one inpainting method on a fixed set of images and masks, and write its report.

For each (image, mask) pair the method's prediction is composited with
:func:`inpnet.models.composite.composite` (known pixels from the input), quantised to 8 bits
as a saved PNG would be, and scored with PSNR and SSIM on the full RGB image. Results are
kept per image, per pattern x ratio bucket, per pattern and overall; FID (and KID per bucket)
only when Inception weights are configured, otherwise they are null with the reason in
``report.json`` and ``table.md``. See :mod:`inpnet.evaluate.sources` for how images and masks
are read and paired, and :mod:`inpnet.evaluate.report` for the files written.

A pair that cannot measure inpainting is left out of every mean (overall, per pattern, per
bucket) and listed with its reason in ``report.json``, ``per_image.csv`` and ``table.md``: a
mask with no hole pixel or no known pixel (the method is not even run), and an exact match,
whose infinite PSNR no mean can hold (a cap such as 100 dB would inflate the headline).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inpnet.config import EvalConfig
from inpnet.errors import ConfigError, DataError
from inpnet.evaluate.sources import EvalImage, EvalMask, Skipped, open_images, open_masks
from inpnet.outputs import locks_output, writing_output

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

    import torch

    from inpnet.evaluate.methods import Method
    from inpnet.evaluate.plots import GridRow
    from inpnet.evaluate.sources import BankMasks, FolderMasks

__all__ = ["EvalResult", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """What :func:`evaluate` wrote: the output folder, the metrics and the report dicts."""

    out_dir: Path
    metrics: dict[str, Any]
    report: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Pair:
    image: EvalImage
    mask: EvalMask


def _ratio_key(ratio: float) -> str:
    return f"{ratio:.2f}"


GRID_RANKS = ("worst", "best")


@dataclass
class _Kept:
    key: tuple[float, int]  # the sort key: (PSNR, order) for the worst, (-PSNR, order) for the best
    order: int  # the pair's place in the evaluation order
    pair: _Pair
    psnr: float
    tiles: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class _GridPicker:
    """Keeps the worst and the best pairs by PSNR of each pattern for grid.png.

    Per pattern the ``per_row`` pairs of lowest PSNR (the worst row, lowest first) and the
    ``per_row`` of highest PSNR (the best row, highest first); a pattern with fewer than
    ``2 * per_row`` scored pairs shows each pair once, in the worst row first. Ties go to the
    pair evaluated first, so the grid is a function of the scores. Only kept pairs are copied.
    """

    def __init__(self, per_row: int) -> None:
        self.per_row = per_row
        self.kept: dict[str, dict[str, list[_Kept]]] = {}
        self._order = 0

    def offer(self, pair: _Pair, psnr: float, masked: torch.Tensor, output: torch.Tensor) -> None:
        order, self._order = self._order, self._order + 1
        ranks = self.kept.setdefault(pair.mask.pattern, {rank: [] for rank in GRID_RANKS})
        tiles: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        for rank, key in (("worst", (psnr, order)), ("best", (-psnr, order))):
            kept = ranks[rank]
            if len(kept) >= self.per_row and key >= kept[-1].key:
                continue
            tiles = tiles or (masked.clone(), output.clone(), pair.image.image.clone())
            kept.append(_Kept(key, order, pair, psnr, tiles))
            kept.sort(key=lambda k: k.key)
            del kept[self.per_row :]

    def _chosen(self) -> Iterator[tuple[str, str, list[_Kept]]]:
        """(pattern, rank, kept pairs) by pattern; a pair in the worst row is not repeated in the best."""
        for pattern in sorted(self.kept):
            worst = self.kept[pattern]["worst"]
            shown = {k.order for k in worst}
            yield pattern, "worst", worst
            yield pattern, "best", [k for k in self.kept[pattern]["best"] if k.order not in shown]

    def rows(self) -> list[GridRow]:
        """The grid's rows: per pattern its worst, then its best pairs, each captioned with its PSNR."""
        from inpnet.evaluate.plots import GridExample, GridRow

        return [
            GridRow(
                f"{pattern}\n{rank}",
                [
                    GridExample(
                        k.tiles, f"PSNR {k.psnr:.2f} dB  hole {_ratio_key(k.pair.mask.ratio)}  {k.pair.image.name}"
                    )
                    for k in kept
                ],
            )
            for pattern, rank, kept in self._chosen()
            if kept
        ]

    def describe(self, masks: str | Path) -> list[dict[str, Any]]:
        """What the grid shows, row by row, for report.json: pattern, rank, image, ratio, mask, psnr."""
        return [
            {
                "pattern": pattern,
                "rank": rank,
                "image": k.pair.image.name,
                "ratio": _ratio_key(k.pair.mask.ratio),
                "mask": _display_path(k.pair.mask.path, masks),
                "psnr": k.psnr,
            }
            for pattern, rank, kept in self._chosen()
            for k in kept
        ]


def _iter_pairs(
    images: Iterable[EvalImage],
    masks: BankMasks | FolderMasks,
    size: int,
    limit: int | None,
    skipped: list[Skipped],
    seen: set[int],
) -> Iterator[_Pair]:
    """(image, mask) pairs in a fixed order: image by image, cell by cell."""
    count = 0
    for image in images:
        if limit is not None and count >= limit:
            break
        count += 1
        for m in masks.masks_for(image, size):
            if isinstance(m, Skipped):
                if all(s.path != m.path for s in skipped):
                    skipped.append(m)
                continue
            seen.add(image.number)
            yield _Pair(image, m)


EMPTY_HOLE = "empty hole: the mask has no hole pixel, so there is nothing to inpaint"
FULL_HOLE = "full hole: the mask has no known pixel, so there is nothing to inpaint from"


def _degenerate(hole: np.ndarray) -> str | None:
    """Why a mask cannot measure inpainting (its pair is left out of every mean), or None."""
    if not hole.any():
        return EMPTY_HOLE
    if hole.all():
        return FULL_HOLE
    return None


def _row(
    pair: _Pair, masks: str | Path, psnr: float | None, ssim: float | None, excluded: str | None
) -> dict[str, Any]:
    """One per_image.csv row; an excluded pair carries its reason and no scores."""
    return {
        "image": pair.image.name,
        "pattern": pair.mask.pattern,
        "ratio": _ratio_key(pair.mask.ratio),
        "achieved_ratio": round(pair.mask.achieved, 4),
        "mask": _display_path(pair.mask.path, masks),
        "psnr": None if excluded else psnr,
        "ssim": None if excluded else ssim,
        "excluded": excluded,
    }


def _scorable(pairs: Iterable[_Pair], masks: str | Path, rows: list[dict[str, Any]]) -> Iterator[_Pair]:
    """The pairs worth running the method on; an empty or full hole goes to ``rows`` as excluded."""
    for pair in pairs:
        reason = _degenerate(pair.mask.hole)
        if reason is None:
            yield pair
        else:
            rows.append(_row(pair, masks, None, None, reason))


def _batches(pairs: Iterable[_Pair], batch_size: int) -> Iterator[list[_Pair]]:
    batch: list[_Pair] = []
    for pair in pairs:
        batch.append(pair)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@locks_output("out_dir")
def evaluate(
    method: Method,
    images: str | Path,
    masks: str | Path,
    *,
    out_dir: str | Path,
    cfg: EvalConfig,
    save_outputs: bool = False,
    limit: int | None = None,
    references: Sequence[str | Path] = (),
    device: str = "cpu",
) -> EvalResult:
    """Evaluate ``method`` on every (image, mask) pair and write the report into ``out_dir``.

    Args:
        method: from :func:`inpnet.evaluate.methods.resolve_method`.
        images: a val shard folder or a folder of images (see :mod:`inpnet.evaluate.sources`).
        masks: the mask bank or a folder of external masks.
        out_dir: receives metrics.json, report.json, per_image.csv, table.md, plots/, grid.png
            (and outputs/<pattern>/<ratio>/<name>.png with ``save_outputs``); created and
            locked before any work, so an unwritable or busy folder fails at once.
        cfg: the ``evaluate`` section of params.
        limit: evaluate only the first N readable images.
        references: report folders of other methods (e.g. the baselines) shown as reference
            rows in table.md and as extra lines in the plots.
        device: where metrics (and FID features) are computed.
    """
    import torch

    from inpnet.evaluate import report as rep
    from inpnet.evaluate.fid_tracker import FidTracker
    from inpnet.evaluate.metrics import psnr, quantize, ssim
    from inpnet.evaluate.plots import save_grid, save_png
    from inpnet.masks.bank import mask_generators
    from inpnet.models.composite import composite, masked_input
    from inpnet.models.patches import hidden_known_fraction
    from inpnet.registry.tracking import file_sha256

    started = time.perf_counter()
    out_dir = Path(out_dir)
    with writing_output(out_dir, "cannot create the report folder"):
        out_dir.mkdir(parents=True, exist_ok=True)  # before the long part: an unwritable --out fails now
    reference_entries = [rep.load_report(r) for r in references]  # fail before the long part
    mask_src = open_masks(masks, seed=cfg.seed, mismatch=cfg.mask_size_mismatch)
    size = mask_src.size or cfg.image_size
    if method.image_size is not None and method.image_size != size:
        raise ConfigError(
            f"method {method.name!r} takes {method.image_size} px images but the evaluation runs at {size} px "
            f"({'the mask bank size' if mask_src.size else 'evaluate.image_size'}); "
            "build the mask bank at the model's size or pick a matching checkpoint"
        )
    image_src = open_images(images, size=size)
    pairing = mask_src.pair(image_src.names())
    log.info(
        "evaluating %s on %s (%s) with masks %s (%s) at %d px",
        method.name,
        images,
        image_src.kind,
        masks,
        pairing,
        size,
    )

    # a model that sees its input patch by patch (MAE) loses the known pixels of every patch with a hole pixel
    view = method.settings().get("view_patch_size")
    view_patch = view if isinstance(view, int) else None
    fid = FidTracker(cfg, device=device)
    grid = _GridPicker(cfg.grid_images)
    skipped: list[Skipped] = []
    rows: list[dict[str, Any]] = []
    method_s = 0.0
    n_run = 0
    n_images: set[int] = set()
    out_root = out_dir / "outputs"
    # A baseline's workers hold the CPU cores; torch's own threads for the metrics would only
    # contend with them (measured: 2.5x less CPU time for the Telea run on 2 cores).
    single = device == "cpu" and method.settings().get("kind") == "baseline"
    with _torch_threads(1 if single else None):
        try:
            pairs = _iter_pairs(image_src, mask_src, size, limit, skipped, n_images)
            for batch in _batches(_scorable(pairs, masks, rows), cfg.batch_size):
                image = torch.stack([p.image.image for p in batch])  # (B, 3, S, S)
                hole = torch.from_numpy(np.stack([p.mask.hole for p in batch]))  # (B, S, S) bool
                mask = hole[:, None].float()  # (B, 1, S, S)
                t0 = time.perf_counter()
                pred = method(image, mask)
                method_s += time.perf_counter() - t0
                n_run += len(batch)
                output = quantize(composite(image, mask, pred.to(image.dtype).cpu()).clamp(0, 1))
                out_d, img_d = output.to(device), image.to(device)
                scores_p = psnr(out_d, img_d).cpu().tolist()
                scores_s = ssim(out_d, img_d).cpu().tolist()
                fid.update(batch, img_d, out_d)
                masked = masked_input(image, mask, fill=0.5)
                hidden = hidden_known_fraction(mask, view_patch).tolist() if view_patch else [0.0] * len(batch)
                for i, p in enumerate(batch):
                    row = {**_row(p, masks, scores_p[i], scores_s[i], None), "hidden_known": hidden[i]}
                    if reason := rep.exclusion(row):
                        rows.append(_row(p, masks, None, None, reason))
                    else:
                        rows.append(row)
                        grid.offer(p, scores_p[i], masked[i], output[i])
                    if save_outputs:
                        save_png(output[i], out_root / p.mask.pattern / row["ratio"] / f"{p.image.name}.png")
        finally:
            method.close()
    skipped = list(image_src.skipped) + skipped
    if not rows:
        listed = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5]) or "no image/mask pairs"
        raise DataError(f"nothing could be evaluated with --images {images} and --masks {masks} ({listed})")
    excluded = [
        {k: r[k] for k in ("image", "pattern", "ratio", "mask")} | {"reason": r["excluded"]}
        for r in rows
        if r["excluded"]
    ]
    if len(excluded) == len(rows):
        raise DataError(
            f"nothing could be scored with --images {images} and --masks {masks}: all {len(rows)} pairs "
            f"are left out ({excluded[0]['mask']}: {excluded[0]['reason']}); use masks with a partial hole"
        )
    if excluded:
        log.warning(
            "%d of %d pairs left out of every mean (e.g. %s: %s); see report.json",
            len(excluded),
            len(rows),
            excluded[0]["mask"],
            excluded[0]["reason"],
        )

    metrics = rep.aggregate(rows, fid.compute())
    total_s = time.perf_counter() - started
    n_pairs = metrics["overall"]["n"]
    report = {
        "method": method.name,
        "method_settings": method.settings(),
        "images": {"source": str(images), "kind": image_src.kind, "count": len(n_images), "size": size},
        "masks": {
            "source": str(masks),
            "kind": mask_src.kind,
            "pairing": pairing,
            "manifest_sha256": file_sha256(Path(masks) / "manifest.json") if mask_src.kind == "bank" else None,
            "generators": mask_generators(masks),  # which generator, options and seed made each pattern's masks
        },
        "visibility": rep.visibility(rows, view_patch),  # the known pixels the method cannot see
        "pairs": n_pairs,  # the pairs in the means
        "fid": fid.status(),
        "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        "excluded": excluded,
        "timing": {
            "total_s": round(total_s, 3),
            "method_s": round(method_s, 3),
            "method_ms_per_pair": round(1000 * method_s / n_run, 3),
            "pairs_per_s": round(n_run / total_s, 3),
        },
        "settings": {
            "batch_size": cfg.batch_size,
            "limit": limit,
            "device": device,
            "save_outputs": save_outputs,
            "seed": cfg.seed,
            "mask_size_mismatch": cfg.mask_size_mismatch,
        },
        "references": [str(r) for r in references],
        "grid": grid.describe(masks),  # the pairs grid.png shows: per pattern the worst and the best by PSNR
    }
    rep.write_report(out_dir, metrics=metrics, report=report, rows=rows, references=reference_entries)
    with writing_output(out_dir):
        save_grid(grid.rows(), out_dir / "grid.png")
    log.info(
        "%s: PSNR %.2f dB, SSIM %.4f over %d pairs in %.1f s (method %.1f ms/pair) -> %s",
        method.name,
        metrics["overall"]["psnr"],
        metrics["overall"]["ssim"],
        n_pairs,
        total_s,
        report["timing"]["method_ms_per_pair"],
        out_dir,
    )
    return EvalResult(out_dir, metrics, report, rows)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: unchanged), then restore."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _display_path(path: Path, root: str | Path) -> str:
    try:
        return path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)
