"""The embedded offline sample: the three Places365 files, built from photographs scikit-image ships.

It has the official names and layout, so every later stage runs on it exactly as on the
real dataset:

- ``train_large_places365standard.tar``: ``data_large/<letter>/<category>/NNNNNNNN.jpg``
  (with directory entries, numbered from 1 within each category),
- ``val_large.tar``: ``val_large/Places365_val_NNNNNNNN.jpg`` (categories interleaved),
- ``filelist_places365-standard.tar``: ``categories_places365.txt`` (``/a/airfield 0``),
  ``places365_train_standard.txt`` (``/a/airfield/00000001.jpg 0``) and
  ``places365_val.txt`` (``Places365_val_00000001.jpg 0``), flat, no folder.

Images are crops at several positions, scales and aspect ratios of a few colour photographs,
resized so the shortest side is ``cfg.shortest_side`` (Places365 "large" has 512). Train and
val crops of a category are distinct boxes. The bytes are the same on every run: crops come
from generators seeded by ``cfg.seed``, JPEG settings are fixed, and the tars are plain
ustar with sorted members, integer mtime, uid/gid 0 and no compression.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from inpnet.config import SampleConfig
from inpnet.errors import DataError

__all__ = ["SAMPLE_CATEGORIES", "SAMPLE_FILES", "write_sample"]

log = logging.getLogger(__name__)

SAMPLE_FILES: dict[str, str] = {
    "train": "train_large_places365standard.tar",
    "val": "val_large.tar",
    "filelist": "filelist_places365-standard.tar",
}
TRAIN_LIST, VAL_LIST, CATEGORIES_LIST = "places365_train_standard.txt", "places365_val.txt", "categories_places365.txt"

_MTIME = 1_451_606_400  # 2016-01-01, near the dataset's release; integer so tar needs no pax header
_ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3)  # width / height, landscape and portrait like Places365
_MIN_SCALE = 0.4  # smallest crop, as a fraction of the largest box of that aspect


def _skimage(name: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        image = getattr(data, name)()
        return image[index] if index is not None else image

    return load


@dataclass(frozen=True)
class _Category:
    path: str  # Places365 category path, e.g. "/g/garage/indoor"
    sources: tuple[Callable[[], np.ndarray], ...]  # photographs bundled with scikit-image (no download)


# Real Places365 category names, sorted as in categories_places365.txt; labels are positions here.
SAMPLE_CATEGORIES: tuple[_Category, ...] = (
    _Category("/c/coffee_shop", (_skimage("coffee"),)),
    _Category("/g/garage/indoor", (_skimage("stereo_motorcycle", 0), _skimage("stereo_motorcycle", 1))),
    _Category("/p/pet_shop", (_skimage("chelsea"),)),
    _Category("/s/science_museum", (_skimage("astronaut"),)),
    _Category("/s/sky", (_skimage("hubble_deep_field"),)),
    _Category("/t/tower", (_skimage("rocket"),)),
)


def write_sample(out_dir: str | Path, cfg: SampleConfig) -> dict[str, Path]:
    """Write the three sample tars into ``out_dir``; returns {"train"|"val"|"filelist": path}.

    Each tar is written under a temporary name and renamed when complete, so an interrupted
    run never leaves a file that looks finished.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_members: dict[str, bytes] = {}
    train_lines: list[str] = []
    val_items: list[tuple[int, bytes]] = []
    for label, category in enumerate(SAMPLE_CATEGORIES):
        rng = np.random.default_rng([cfg.seed, label])
        photos = [_as_rgb(load(), category.path) for load in category.sources]
        boxes = _distinct_boxes(photos, cfg.train_per_category + cfg.val_per_category, cfg.shortest_side, rng)
        jpegs = [_encode(_crop_resize(photos[src], box, cfg.shortest_side), cfg.jpeg_quality) for src, box in boxes]
        for number, data in enumerate(jpegs[: cfg.train_per_category], start=1):
            name = f"{category.path}/{number:08d}.jpg"
            train_members[f"data_large{name}"] = data
            train_lines.append(f"{name} {label}")
        val_items += [(label, data) for data in jpegs[cfg.train_per_category:]]

    # the official val set interleaves categories; a seeded permutation does the same
    order = np.random.default_rng([cfg.seed, len(SAMPLE_CATEGORIES)]).permutation(len(val_items))
    val_members: dict[str, bytes] = {}
    val_lines: list[str] = []
    for number, index in enumerate(order, start=1):
        label, data = val_items[index]
        name = f"Places365_val_{number:08d}.jpg"
        val_members[f"val_large/{name}"] = data
        val_lines.append(f"{name} {label}")

    categories = [f"{c.path} {label}" for label, c in enumerate(SAMPLE_CATEGORIES)]
    lists = {CATEGORIES_LIST: categories, TRAIN_LIST: train_lines, VAL_LIST: val_lines}
    list_members = {name: ("\n".join(lines) + "\n").encode("ascii") for name, lines in lists.items()}

    paths = {}
    for key, members, with_dirs in (("train", train_members, True), ("val", val_members, True),
                                    ("filelist", list_members, False)):
        paths[key] = _write_tar(out_dir / SAMPLE_FILES[key], members, with_dirs=with_dirs)
    log.info("sample: %d train and %d val images in %d categories under %s",
             len(train_members), len(val_members), len(SAMPLE_CATEGORIES), out_dir)
    return paths


def _as_rgb(image: np.ndarray, where: str) -> np.ndarray:
    if image.dtype != np.uint8:
        raise DataError(f"sample source for {where} is {image.dtype}, expected uint8; check the scikit-image version")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    return np.ascontiguousarray(image[:, :, :3])


def _distinct_boxes(photos: list[np.ndarray], count: int, shortest_side: int,
                    rng: np.random.Generator) -> list[tuple[int, tuple[int, int, int, int]]]:
    """``count`` different (photo index, (left, top, width, height)) crops, in draw order."""
    seen: set[tuple[int, tuple[int, int, int, int]]] = set()
    out = []
    for _ in range(count * 50):
        src = int(rng.integers(len(photos)))
        height, width = photos[src].shape[:2]
        aspect = _ASPECTS[int(rng.integers(len(_ASPECTS)))]
        max_h = min(height, width / aspect)  # tallest box of this aspect that fits
        # prefer crops at least as large as the output, so few images are upscaled
        low = min(0.9, max(_MIN_SCALE, shortest_side / max_h))
        box_h = max_h * rng.uniform(low, 1.0)
        box_w = min(width, round(box_h * aspect))
        box_h = min(height, round(box_h))
        left = int(rng.integers(width - box_w + 1))
        top = int(rng.integers(height - box_h + 1))
        key = (src, (left, top, box_w, box_h))
        if key not in seen:
            seen.add(key)
            out.append(key)
            if len(out) == count:
                return out
    raise DataError(f"could not draw {count} distinct crops from the sample photographs; lower "
                    f"data.sample.train_per_category/val_per_category")


def _crop_resize(photo: np.ndarray, box: tuple[int, int, int, int], shortest_side: int) -> Image.Image:
    left, top, width, height = box
    crop = Image.fromarray(photo[top:top + height, left:left + width])
    scale = shortest_side / min(width, height)
    size = (max(shortest_side, round(width * scale)), max(shortest_side, round(height * scale)))
    return crop.resize(size, Image.Resampling.LANCZOS)


def _encode(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    # baseline, no optimize/progressive/EXIF: the same pixels always give the same bytes
    image.save(buf, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False, progressive=False)
    return buf.getvalue()


def _write_tar(path: Path, members: dict[str, bytes], *, with_dirs: bool) -> Path:
    """A deterministic uncompressed ustar: sorted paths, fixed owner, mode and mtime."""
    entries: dict[str, bytes | None] = dict(members)
    if with_dirs:
        for name in members:
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                entries.setdefault("/".join(parts[:depth]), None)  # None = directory, as GNU tar stores it
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(entries, key=lambda n: n.split("/")):
            data = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = _MTIME, 0, 0, "root", "root"
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
    return path
