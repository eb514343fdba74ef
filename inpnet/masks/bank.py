"""The fixed evaluation mask bank: PNG files on disk, written once, read by every evaluation.

Layout::

    <bank>/<pattern>/<ratio %.2f>/NNNN.png     8-bit grey, 255 = hole, 0 = known
    <bank>/manifest.json                       every mask with its achieved hole ratio

Determinism: mask ``i`` of cell ``(pattern, ratio)`` is drawn from a generator seeded by
``(seed, crc32(pattern), round(ratio * 10000), i)``, so adding a pattern, a ratio or more
masks per cell never changes the masks already in the bank, and PNGs are encoded with fixed
settings: the same arguments give the same bytes. The manifest names, per pattern, the
generator, its options and that seeding (``generators``, :func:`mask_generators`), so a report
can say what made its masks; the training masks come from another stream
(:func:`inpnet.masks.mixture.training_mask_rng`), never from these seeds.

External masks (``external_dir``, e.g. the NVIDIA irregular mask set) are read with
:func:`inpnet.images.read_mask_png` (binarised at 50%, resized nearest), bucketed to the nearest requested
ratio when their hole ratio lies within ``bucket_width / 2`` of it, and ``per_cell`` of each
bucket are picked with a seeded generator. Unreadable files are skipped and listed in the
manifest under ``skipped``.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inpnet.errors import MaskError
from inpnet.images import IMAGE_EXTENSIONS, encode_mask_png, hole_ratio, read_mask_png
from inpnet.masks.patterns import MAX_RATIO, PATTERNS, make_mask, pattern_options
from inpnet.outputs import locks_output

__all__ = ["BANK_RNG", "MANIFEST", "BankMask", "load_bank", "mask_generators", "write_bank"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class BankMask:
    """One mask of the bank; ``path`` is absolute, ``achieved`` is its measured hole ratio."""

    pattern: str
    ratio: float
    index: int
    path: Path
    achieved: float


BANK_RNG = "numpy default_rng([seed, crc32(pattern), round(ratio * 10000), index])"  # what _cell_seed does


def _cell_seed(seed: int, pattern: str, ratio: float, index: int) -> list[int]:
    return [seed, zlib.crc32(pattern.encode()), int(round(ratio * 10000)), index]


@locks_output("out_dir")
def write_bank(
    out_dir: str | Path,
    *,
    size: int,
    patterns: Sequence[str],
    ratios: Sequence[float],
    per_cell: int,
    seed: int,
    external_dir: str | Path | None = None,
    external_invert: bool = False,
    bucket_width: float = 0.1,
    presets: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write the bank to ``out_dir`` and return the manifest path.

    ``external`` in ``patterns`` (or an ``external_dir``) adds the external cells. Existing
    PNGs in the cells being written are replaced; other folders are left alone. ``out_dir``
    is locked while it is written (:class:`inpnet.outputs.FolderLock`).
    """
    out = Path(out_dir)
    keys = [f"{r:.2f}" for r in ratios]
    if len(set(keys)) != len(keys):
        raise MaskError(f"mask bank ratios {list(ratios)} collide when formatted as %.2f")
    bad = [r for r in ratios if not 0.0 <= r <= MAX_RATIO]
    if bad:
        raise MaskError(f"mask bank ratios must lie in [0, {MAX_RATIO}], got {bad}")
    if per_cell < 1 or size < 1:
        raise MaskError(f"mask bank needs size >= 1 and per_cell >= 1, got size={size}, per_cell={per_cell}")
    unknown = sorted(set(patterns) - set(PATTERNS) - {"external"})
    if unknown:
        raise MaskError(f"unknown mask patterns {unknown}; choose from {[*PATTERNS, 'external']}")
    generated = [p for p in patterns if p != "external"]
    want_external = "external" in patterns or external_dir is not None
    if want_external and external_dir is None:
        raise MaskError("pattern 'external' needs an external mask folder (--external DIR / masks.external_dir)")

    options = {p: pattern_options(p, **(presets or {}).get(p, {})) for p in generated}
    generators: dict[str, dict[str, Any]] = {
        p: {
            "generator": f"inpnet.masks.patterns.make_mask({p!r})",
            "options": options[p],
            "rng": BANK_RNG,
            "seed": seed,
        }
        for p in generated
    }
    entries: list[dict[str, Any]] = []
    for pattern in generated:
        for ratio, key in zip(ratios, keys, strict=True):
            cell = _fresh_cell(out / pattern / key)
            for i in range(per_cell):
                rng = np.random.default_rng(_cell_seed(seed, pattern, ratio, i))
                mask = make_mask(pattern, size, size, ratio, rng, **options[pattern])
                entries.append(_write(cell, out, pattern, ratio, i, mask, hole_ratio(mask)))
    skipped: list[dict[str, Any]] = []
    if external_dir is not None:  # = want_external: 'external' without a folder was refused above
        ext_entries, skipped = _write_external(
            out, Path(external_dir), size, ratios, keys, per_cell, seed, external_invert, bucket_width
        )
        entries.extend(ext_entries)
        generators["external"] = {
            "generator": "mask files",
            "source": str(external_dir),
            "options": {"invert": external_invert, "bucket_width": bucket_width},
            "rng": "numpy default_rng([seed, crc32('external'), round(ratio * 10000), 0]) picks per_cell files per bucket",
            "seed": seed,
        }

    manifest = {
        "version": 1,
        "size": size,
        "seed": seed,
        "per_cell": per_cell,
        "patterns": list(generated) + (["external"] if want_external else []),
        "ratios": [float(r) for r in ratios],
        "masks": entries,
        "skipped": skipped,
        "generators": generators,
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    log.info("wrote %d masks to %s", len(entries), out)
    return path


def _fresh_cell(cell: Path) -> Path:
    cell.mkdir(parents=True, exist_ok=True)
    for old in cell.glob("*.png"):
        old.unlink()
    return cell


def _write(
    cell: Path, root: Path, pattern: str, ratio: float, i: int, mask: np.ndarray, achieved: float, **extra: str
) -> dict[str, Any]:
    path = cell / f"{i:04d}.png"
    path.write_bytes(encode_mask_png(mask))
    return {
        "pattern": pattern,
        "ratio": float(ratio),
        "index": i,
        "path": path.relative_to(root).as_posix(),
        "achieved": round(achieved, 6),
        **extra,
    }


def _write_external(
    out: Path,
    src: Path,
    size: int,
    ratios: Sequence[float],
    keys: Sequence[str],
    per_cell: int,
    seed: int,
    invert: bool,
    bucket_width: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not src.is_dir():
        raise MaskError(f"external mask folder {src} does not exist")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise MaskError(f"external mask folder {src} holds no mask images ({', '.join(IMAGE_EXTENSIONS)})")
    buckets: dict[int, list[tuple[Path, np.ndarray, float]]] = {i: [] for i in range(len(ratios))}
    skipped = []
    for f in files:
        try:
            mask = read_mask_png(f, size=size, invert=invert)
        except MaskError as err:
            log.warning("skipping external mask: %s", err)
            skipped.append({"path": f.relative_to(src).as_posix(), "reason": str(err)})
            continue
        achieved = hole_ratio(mask)
        j = int(np.argmin([abs(achieved - r) for r in ratios]))
        if abs(achieved - ratios[j]) <= bucket_width / 2:
            buckets[j].append((f, mask, achieved))
    entries = []
    for j, (ratio, key) in enumerate(zip(ratios, keys, strict=True)):
        cell = _fresh_cell(out / "external" / key)
        found = buckets[j]
        if len(found) < per_cell:
            log.warning("external masks: only %d of %d wanted near ratio %s", len(found), per_cell, key)
        rng = np.random.default_rng(_cell_seed(seed, "external", ratio, 0))
        picks = rng.permutation(len(found))[:per_cell]
        for i, k in enumerate(picks):
            f, mask, achieved = found[int(k)]
            entries.append(
                _write(cell, out, "external", ratio, i, mask, achieved, source=f.relative_to(src).as_posix())
            )
    return entries, skipped


# ------------------------------------------------------------------------------ reader


def mask_generators(masks: str | Path) -> dict[str, dict[str, Any]]:
    """What made the masks under ``masks``, per pattern: the generator, its options, its seeding.

    A bank's manifest says it (``generators``; a bank written before manifests did is named
    by its seed only); a plain folder of mask files is its own source (pattern ``external``).
    """
    root = Path(masks)
    path = root / MANIFEST
    if not path.is_file():
        return {"external": {"generator": "mask files", "source": str(root)}}
    try:
        data = json.loads(path.read_text())
        found = data.get("generators")
        if found is not None:
            return {str(k): dict(v) for k, v in found.items()}
        old = "unknown: the bank's manifest predates generator records; rebuild it with `inpnet masks bank`"
        return {str(p): {"generator": old, "seed": data.get("seed")} for p in data.get("patterns", [])}
    except (OSError, ValueError, AttributeError, TypeError) as err:
        raise MaskError(
            f"{path}: malformed mask bank manifest ({err!r}); rebuild it with `inpnet masks bank`"
        ) from None


def load_bank(bank_dir: str | Path) -> list[BankMask]:
    """Every mask listed in ``<bank_dir>/manifest.json``, in manifest order (pattern, ratio, index)."""
    root = Path(bank_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise MaskError(f"{path}: no mask bank manifest; build the bank with `inpnet masks bank --out {root}`")
    try:
        data = json.loads(path.read_text())
        rows = data["masks"]
        masks = [
            BankMask(
                pattern=str(m["pattern"]),
                ratio=float(m["ratio"]),
                index=int(m["index"]),
                path=(root / m["path"]).resolve(),
                achieved=float(m["achieved"]),
            )
            for m in rows
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise MaskError(
            f"{path}: malformed mask bank manifest ({err!r}); rebuild it with `inpnet masks bank`"
        ) from None
    missing = [m.path for m in masks if not m.path.is_file()]
    if missing:
        raise MaskError(f"{path}: {len(missing)} listed masks are missing, e.g. {missing[0]}; rebuild the bank")
    return masks
