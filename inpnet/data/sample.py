"""The embedded offline sample: the three Places365 files, built from photographs the dependencies ship.

It has the official names and layout, so every later stage runs on it exactly as on the
real dataset:

- ``train_large_places365standard.tar``: ``data_large/<letter>/<category>/NNNNNNNN.jpg``
  (with directory entries, numbered from 1 within each category),
- ``val_large.tar``: ``val_large/Places365_val_NNNNNNNN.jpg`` (categories interleaved),
- ``filelist_places365-standard.tar``: ``categories_places365.txt`` (``/a/airfield 0``),
  ``places365_train_standard.txt`` (``/a/airfield/00000001.jpg 0``) and
  ``places365_val.txt`` (``Places365_val_00000001.jpg 0``), flat, no folder.

Images are crops at several positions, scales and aspect ratios of the colour photographs
that the locked dependencies ship (scikit-image's ``skimage.data``, scikit-learn's
``load_sample_images`` files, matplotlib's sample data), resized so the shortest side is
``cfg.shortest_side`` (Places365 "large" has 512). **Train and val come from disjoint
photographs**: every photograph belongs to exactly one category and every category to
exactly one split (:data:`SAMPLE_CATEGORIES` lists which photo is in which split), so a val
score measures inpainting of scenes the model never saw, not recall of training photos. The
two views of scikit-image's stereo motorcycle are one scene and stay together in train.

| split | category | photograph(s) |
|---|---|---|
| train | /b/biology_laboratory | skimage ``immunohistochemistry`` |
| train | /b/botanical_garden | scikit-learn ``flower.jpg`` |
| val | /c/coffee_shop | skimage ``coffee`` |
| train | /g/garage/indoor | skimage ``stereo_motorcycle`` (left and right views) |
| train | /h/hospital_room | skimage ``retina`` |
| val | /o/office | matplotlib ``grace_hopper.jpg`` |
| val | /p/pagoda | scikit-learn ``china.jpg`` |
| train | /p/pet_shop | skimage ``chelsea`` |
| train | /s/science_museum | skimage ``astronaut`` |
| train | /s/sky | skimage ``hubble_deep_field`` |
| train | /t/tower | skimage ``rocket`` |

The grey photographs scikit-image ships (camera, coins, moon, ...) are left out: they would
teach the models a colour statistics no real photograph has. Crops within a category are
distinct boxes. The bytes are the same on every run: crops come
from generators seeded by ``cfg.seed``, JPEG settings are fixed, and the tars are plain
ustar with sorted members, integer mtime, uid/gid 0 and no compression.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from inpnet.config import SampleConfig
from inpnet.errors import DataError

__all__ = ["SAMPLE_CATEGORIES", "SAMPLE_FILES", "split_photos", "write_sample"]

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


@dataclass(frozen=True)
class _Photo:
    """One photograph a dependency ships: ``name`` says where it comes from."""

    name: str
    load: Callable[[], np.ndarray]


def _skimage(name: str, index: int | None = None) -> _Photo:
    def load() -> np.ndarray:
        from skimage import data

        image: np.ndarray = getattr(data, name)()
        return image[index] if index is not None else image

    return _Photo(f"skimage.data.{name}" + (f"[{index}]" if index is not None else ""), load)


def _package_file(package: str, relative: str) -> _Photo:
    """A JPEG inside an installed package, found without importing the package."""

    def load() -> np.ndarray:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(
                f"sample photograph {package}/{relative}: package {package!r} is not installed; run `uv sync --locked`"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / relative
        if not path.is_file():
            raise DataError(f"sample photograph {path} is missing from the installed {package}")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    return _Photo(f"{package}/{relative}", load)


@dataclass(frozen=True)
class _Category:
    path: str  # Places365 category path, e.g. "/g/garage/indoor"
    split: Literal["train", "val"]  # every photograph of a category is in this split only
    sources: tuple[_Photo, ...]  # photographs bundled with the locked dependencies (no download)


# Real Places365 category names, sorted as in categories_places365.txt; labels are positions here.
SAMPLE_CATEGORIES: tuple[_Category, ...] = (
    _Category("/b/biology_laboratory", "train", (_skimage("immunohistochemistry"),)),
    _Category("/b/botanical_garden", "train", (_package_file("sklearn", "datasets/images/flower.jpg"),)),
    _Category("/c/coffee_shop", "val", (_skimage("coffee"),)),
    _Category("/g/garage/indoor", "train", (_skimage("stereo_motorcycle", 0), _skimage("stereo_motorcycle", 1))),
    _Category("/h/hospital_room", "train", (_skimage("retina"),)),
    _Category("/o/office", "val", (_package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),)),
    _Category("/p/pagoda", "val", (_package_file("sklearn", "datasets/images/china.jpg"),)),
    _Category("/p/pet_shop", "train", (_skimage("chelsea"),)),
    _Category("/s/science_museum", "train", (_skimage("astronaut"),)),
    _Category("/s/sky", "train", (_skimage("hubble_deep_field"),)),
    _Category("/t/tower", "train", (_skimage("rocket"),)),
)


def split_photos() -> dict[str, list[str]]:
    """Which photograph is in which split: {"train": [names], "val": [names]}."""
    out: dict[str, list[str]] = {"train": [], "val": []}
    for category in SAMPLE_CATEGORIES:
        out[category.split] += [photo.name for photo in category.sources]
    return out


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
        photos = [_as_rgb(photo.load(), photo.name) for photo in category.sources]
        count = cfg.train_per_category if category.split == "train" else cfg.val_per_category
        boxes = _distinct_boxes(photos, count, cfg.shortest_side, rng)
        jpegs = [_encode(_crop_resize(photos[src], box, cfg.shortest_side), cfg.jpeg_quality) for src, box in boxes]
        if category.split == "val":
            val_items += [(label, data) for data in jpegs]
            continue
        for number, data in enumerate(jpegs, start=1):
            name = f"{category.path}/{number:08d}.jpg"
            train_members[f"data_large{name}"] = data
            train_lines.append(f"{name} {label}")

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
    for key, members, with_dirs in (
        ("train", train_members, True),
        ("val", val_members, True),
        ("filelist", list_members, False),
    ):
        paths[key] = _write_tar(out_dir / SAMPLE_FILES[key], members, with_dirs=with_dirs)
    log.info(
        "sample: %d train and %d val images from disjoint photographs (%d categories) under %s",
        len(train_members),
        len(val_members),
        len(SAMPLE_CATEGORIES),
        out_dir,
    )
    return paths


def _as_rgb(image: np.ndarray, where: str) -> np.ndarray:
    if image.dtype != np.uint8:
        raise DataError(f"sample photograph {where} is {image.dtype}, expected uint8; check the installed version")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    return np.ascontiguousarray(image[:, :, :3])


def _distinct_boxes(
    photos: list[np.ndarray], count: int, shortest_side: int, rng: np.random.Generator
) -> list[tuple[int, tuple[int, int, int, int]]]:
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
    raise DataError(
        f"could not draw {count} distinct crops from the sample photographs; lower "
        f"data.sample.train_per_category/val_per_category"
    )


def _crop_resize(photo: np.ndarray, box: tuple[int, int, int, int], shortest_side: int) -> Image.Image:
    left, top, width, height = box
    crop = Image.fromarray(photo[top : top + height, left : left + width])
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
