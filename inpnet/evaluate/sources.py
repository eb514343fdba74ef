"""Where evaluation images and masks come from, and how they are paired.

Images (``--images``):

- a **val shard folder** (it holds ``manifest.json``): read with
  :func:`inpnet.data.loader.iter_eval_images`, every sample once in a fixed order;
- a **plain folder** of the user's photos (``.jpg .jpeg .png .bmp .webp .tif .tiff``, not
  recursive, sorted by name; other files are ignored). EXIF orientation is applied, the image
  is converted to RGB, its shortest side resized (bicubic) to the evaluation size and the
  centre cropped. A file that cannot be decoded is skipped and listed with the reason.

Masks (``--masks``), 255 = hole, binarised at 50 % (values >= 128 are holes):

- the **mask bank** (it holds ``manifest.json``, written by ``inpnet masks bank``): every image
  is evaluated in every (pattern, ratio) cell, with the cell's mask number
  ``image_number % masks_in_cell``; images are resized to the bank's size, so the masks are
  used as written.
- an **external folder** of mask images (e.g. the NVIDIA irregular masks), reported as pattern
  ``external`` and bucketed by achieved hole ratio to the nearest 0.1. Pairing: when the
  images are a plain folder and *every* image has a mask with the same file stem, masks are
  paired by stem; otherwise image number ``i`` gets mask ``order[i % n_masks]`` where
  ``order = numpy.random.default_rng(seed).permutation(n_masks)`` over the masks sorted by
  name (seed = ``evaluate.seed``). A mask goes through the same shortest-side resize and
  centre crop as its image (nearest neighbour). A mask whose size differs from its image's
  original size is resized that way when ``evaluate.mask_size_mismatch`` is ``resize``
  (default) or skipped and listed when it is ``refuse`` (shard images are compared at the
  evaluation size, since their original size is not kept).

``image_number`` is the image's position in the source, counted before unreadable files are
dropped, so one broken file does not change which masks the others get.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from inpnet.errors import DataError, MaskError
from inpnet.images import IMAGE_EXTENSIONS, fit_square, hole_ratio, load_image

if TYPE_CHECKING:
    import torch

    from inpnet.masks import BankMask

__all__ = [
    "BankMasks",
    "EvalImage",
    "EvalMask",
    "FolderMasks",
    "ImageFolder",
    "ShardImages",
    "Skipped",
    "open_images",
    "open_masks",
]

log = logging.getLogger(__name__)

EXTERNAL_PATTERN = "external"


@dataclass(frozen=True)
class Skipped:
    """An input file left out of the evaluation, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class EvalImage:
    number: int  # position in the source (stable under skipped files)
    name: str  # file stem or shard key
    image: torch.Tensor  # (3, S, S) float in [0, 1]
    source_size: tuple[int, int] | None  # (width, height) before resizing; None for shards


@dataclass(frozen=True)
class EvalMask:
    pattern: str
    ratio: float  # the bucket this mask is reported in
    path: Path
    hole: np.ndarray  # (S, S) bool, True = hole
    achieved: float  # hole fraction of ``hole``


# ----------------------------------------------------------------------------- images


class ImageFolder:
    """The image files directly inside ``root``, sorted by name, resized to ``size``."""

    kind = "folder"

    def __init__(self, root: Path, size: int) -> None:
        self.root = Path(root)
        self.size = size
        self.files = sorted(
            p
            for p in self.root.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.files:
            raise DataError(
                f"{self.root}: no images ({' '.join(IMAGE_EXTENSIONS)}) in this folder; "
                "pass a folder of photos or a val shard folder with manifest.json"
            )
        stems = [p.stem for p in self.files]
        dup = {s for s in stems if stems.count(s) > 1}
        self._names = [p.name if p.stem in dup else p.stem for p in self.files]
        self.skipped: list[Skipped] = []

    def names(self) -> list[str] | None:
        return list(self._names)

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[EvalImage]:
        self.skipped = []
        for number, (path, name) in enumerate(zip(self.files, self._names, strict=True)):
            try:
                image, source_size = load_image(path, self.size)
            except DataError as err:
                log.warning("skipping %s", err)
                self.skipped.append(Skipped(str(path), str(err).removeprefix(f"{path}: ")))
                continue
            yield EvalImage(number, name, image, source_size)


class ShardImages:
    """The samples of a val shard folder, through the shard loader's evaluation iterator."""

    kind = "shards"

    def __init__(self, root: Path, size: int) -> None:
        self.root = Path(root)
        self.size = size
        self.skipped: list[Skipped] = []

    def names(self) -> list[str] | None:
        return None  # keys are only known by reading the shards

    def __iter__(self) -> Iterator[EvalImage]:
        from inpnet.data.loader import iter_eval_images

        for number, (key, image) in enumerate(iter_eval_images(self.root, image_size=self.size)):
            yield EvalImage(number, key, image, None)


def open_images(path: str | Path, *, size: int) -> ImageFolder | ShardImages:
    """A val shard folder (has ``manifest.json``) or a plain folder of images."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"--images {path}: not a folder (pass a val shard folder or a folder of images)")
    if (path / "manifest.json").is_file():
        return ShardImages(path, size)
    return ImageFolder(path, size)


# ------------------------------------------------------------------------------ masks


class BankMasks:
    """The fixed evaluation mask bank: every image in every (pattern, ratio) cell."""

    kind = "bank"

    def __init__(self, root: Path) -> None:
        from PIL import Image

        from inpnet.masks import load_bank

        self.root = Path(root)
        entries = load_bank(self.root)
        if not entries:
            raise DataError(f"{self.root}: the mask bank lists no masks; rebuild it with `inpnet masks bank`")
        cells: dict[tuple[str, float], list[BankMask]] = {}
        for e in entries:
            cells.setdefault((e.pattern, round(float(e.ratio), 4)), []).append(e)
        self.cells = {k: sorted(v, key=lambda e: e.index) for k, v in sorted(cells.items())}
        first = entries[0].path
        try:
            with Image.open(first) as img:
                width, height = img.size
        except Exception as err:  # noqa: BLE001 - PIL raises many types for a bad file
            raise DataError(f"{first}: cannot read mask ({err}); rebuild the bank with `inpnet masks bank`") from None
        if width != height:
            raise DataError(f"{self.root}: bank masks must be square, {first} is {width}x{height}")
        self.size = width
        self._cache: dict[Path, np.ndarray | Skipped] = {}

    def pair(self, image_names: list[str] | None) -> str:
        return "bank: every cell, mask index = image_number % masks_in_cell"

    def masks_for(self, image: EvalImage, size: int) -> list[EvalMask | Skipped]:
        """One mask per (pattern, ratio) cell for ``image``."""
        from inpnet.images import read_mask_png

        out: list[EvalMask | Skipped] = []
        for (pattern, ratio), entries in self.cells.items():
            entry = entries[image.number % len(entries)]
            if entry.path not in self._cache:
                try:
                    self._cache[entry.path] = read_mask_png(entry.path, size=size)
                except MaskError as err:
                    self._cache[entry.path] = Skipped(str(entry.path), str(err).removeprefix(f"{entry.path}: "))
            hole = self._cache[entry.path]
            if isinstance(hole, Skipped):
                out.append(hole)
            else:
                out.append(EvalMask(pattern, ratio, entry.path, hole, hole_ratio(hole)))
        return out


class FolderMasks:
    """A folder of external mask images, paired by stem or by a seeded permutation."""

    kind = "folder"

    def __init__(self, root: Path, *, seed: int = 0, mismatch: Literal["resize", "refuse"] = "resize") -> None:
        self.root = Path(root)
        self.files = sorted(
            p
            for p in self.root.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.files:
            raise DataError(
                f"{self.root}: no mask images (.png ...) in this folder; pass the mask bank or a mask folder"
            )
        self.size: int | None = None  # external masks follow the images' size
        self.mismatch = mismatch
        self.order = np.random.default_rng(seed).permutation(len(self.files))
        self._by_stem: dict[str, Path] | None = None

    def pair(self, image_names: list[str] | None) -> str:
        """Choose stem pairing when every image name has a mask of that stem; say which."""
        stems = {p.stem: p for p in self.files}
        if image_names and all(n in stems for n in image_names):
            self._by_stem = stems
            return "stem: each image with the mask of the same file stem"
        self._by_stem = None
        return "permutation: image i gets mask order[i % n_masks], order = default_rng(seed).permutation(n_masks)"

    def _path_for(self, image: EvalImage) -> Path:
        if self._by_stem is not None:
            return self._by_stem[image.name]
        return self.files[int(self.order[image.number % len(self.files)])]

    def masks_for(self, image: EvalImage, size: int) -> list[EvalMask | Skipped]:
        """The one mask paired with ``image``, fitted to ``size`` like the image was."""
        from PIL import Image

        from inpnet.images import read_mask_png

        path = self._path_for(image)
        try:
            hole = read_mask_png(path)  # (h, w) bool, binarised at 50 %
        except MaskError as err:
            return [Skipped(str(path), str(err).removeprefix(f"{path}: "))]
        mask_size = (hole.shape[1], hole.shape[0])
        expected = image.source_size or (size, size)
        if mask_size != expected:
            if self.mismatch == "refuse":
                return [
                    Skipped(
                        str(path),
                        f"mask is {mask_size[0]}x{mask_size[1]} but image {image.name} is "
                        f"{expected[0]}x{expected[1]} (evaluate.mask_size_mismatch=refuse)",
                    )
                ]
            log.info("%s: %dx%d mask resized to fit %s (%dx%d)", path.name, *mask_size, image.name, *expected)
        if hole.shape != (size, size):
            fitted = fit_square(Image.fromarray(hole.astype(np.uint8) * 255), size, Image.Resampling.NEAREST)
            hole = np.asarray(fitted) >= 128  # (S, S)
        achieved = hole_ratio(hole)
        return [EvalMask(EXTERNAL_PATTERN, round(achieved, 1), path, hole, achieved)]


def open_masks(
    path: str | Path, *, seed: int = 0, mismatch: Literal["resize", "refuse"] = "resize"
) -> BankMasks | FolderMasks:
    """The mask bank (has ``manifest.json``) or a folder of external masks."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"--masks {path}: not a folder (pass the mask bank, e.g. data/masks, or a mask folder)")
    if (path / "manifest.json").is_file():
        return BankMasks(path)
    return FolderMasks(path, seed=seed, mismatch=mismatch)
