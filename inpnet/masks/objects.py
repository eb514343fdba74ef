"""Object-aware training masks (CM-GAN, Zheng et al. 2022, "object-aware training").

Real users mostly erase *objects*, so CM-GAN trains on holes shaped like objects as well as
on free-form strokes and boxes. It also keeps the model from learning to invent objects: an
object of the training image that lies mostly inside the hole would teach the generator to
paint a whole object from nothing, so such objects are taken *out* of the hole (they stay
visible); objects only partly covered stay in the hole, so that completing a partly visible
object is still learned.

Folder format (``train.masks.object_dir``)::

    <object_dir>/<key>.png     one instance map per image, named by the image's shard key

An instance map is a PNG whose distinct values label segments; 0 is "no object":
- single-channel 8- or 16-bit PNGs: each non-zero value is one instance;
- RGB PNGs (COCO panoptic format): id = R + 256 G + 256^2 B, 0 = void.
Segments covering more than ``object_max_area`` of the image (sky, floor, walls in a
panoptic map) count as background, because panoptic maps label "stuff" too.

Two uses of the folder:
- **shapes**: an object hole is one instance taken from a random map of the folder,
  dilated a little and placed at a random position (a distractor silhouette);
- **exclusion**: when the training image's own map is known (``keys=`` given to
  :meth:`ObjectMaskSampler.sample`), its objects mostly inside the hole are removed from the
  hole. Maps are brought to the training size by resizing the shortest side and
  centre-cropping, the loader's evaluation transform; with random-crop training the map is
  only approximately aligned with the image (the loader does not yet carry maps through its
  augmentation). Without keys there is no exclusion.

Free-form strokes and boxes come from :func:`inpnet.masks.freeform.free_form_mask`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from inpnet.config import TrainMasksConfig
from inpnet.data.jpeg import BadImage, open_image
from inpnet.errors import MaskError
from inpnet.masks.freeform import free_form_mask
from inpnet.masks.mixture import ramp_max_ratio

__all__ = ["ObjectMaskSampler", "exclude_covered_objects", "load_instance_map", "object_hole"]

log = logging.getLogger(__name__)


def load_instance_map(path: Path, size: int | None = None) -> np.ndarray:
    """Read an instance PNG into an int64 (H, W) label map (0 = no object).

    With ``size``, the map is resized (nearest, shortest side to ``size``) and centre-cropped
    to (size, size).
    """
    try:
        with open_image(path) as im:
            arr = np.asarray(im)
    except BadImage as err:
        raise MaskError(f"{path}: instance map is {err}; pass a smaller map") from None
    except (OSError, ValueError) as err:
        raise MaskError(f"{path}: cannot read instance map ({err}); expected an 8/16-bit or RGB PNG") from None
    if arr.ndim == 3:
        if arr.shape[2] < 3:
            arr = arr[..., 0]
        else:
            rgb = arr[..., :3].astype(np.int64)
            arr = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]  # COCO panoptic id
    labels = arr.astype(np.int64)
    if size is not None:
        labels = _resize_center_crop(labels, size)
    return labels


def _resize_center_crop(labels: np.ndarray, size: int) -> np.ndarray:
    h, w = labels.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    # cv2 cannot resize int64; int32 holds every COCO panoptic id (< 2^24)
    resized = cv2.resize(labels.astype(np.int32), (nw, nh), interpolation=cv2.INTER_NEAREST)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return resized[y0 : y0 + size, x0 : x0 + size].astype(np.int64)


def object_ids(labels: np.ndarray, max_area: float) -> list[int]:
    """Ids of the segments that count as objects: non-zero and at most ``max_area`` of the image."""
    ids, counts = np.unique(labels, return_counts=True)
    limit = max_area * labels.size
    return [int(i) for i, c in zip(ids, counts, strict=True) if i != 0 and c <= limit]


def exclude_covered_objects(
    hole: np.ndarray, labels: np.ndarray, *, overlap: float = 0.5, max_area: float = 0.5
) -> np.ndarray:
    """Remove from ``hole`` every object of ``labels`` with more than ``overlap`` of its area inside it.

    Args:
        hole: bool (H, W), True = hole.
        labels: int (H, W) instance map of the same image, 0 = no object.
        overlap: share of an object's area above which the object is taken out of the hole.
        max_area: segments larger than this share of the image are background, never excluded.
    """
    if hole.shape != labels.shape:
        raise MaskError(f"hole shape {hole.shape} != instance map shape {labels.shape}")
    out = hole.copy()
    for i in object_ids(labels, max_area):
        obj = labels == i
        if np.count_nonzero(hole & obj) > overlap * np.count_nonzero(obj):
            out &= ~obj
    return out


def object_hole(labels: np.ndarray, size: int, rng: np.random.Generator, *, max_area: float = 0.5) -> np.ndarray:
    """One object silhouette from ``labels``, dilated and placed at a random spot: bool (size, size).

    Returns an empty mask when the map holds no object.
    """
    ids = object_ids(labels, max_area)
    hole = np.zeros((size, size), bool)
    if not ids:
        return hole
    obj = (labels == ids[int(rng.integers(len(ids)))]).astype(np.uint8)
    ys, xs = np.nonzero(obj)
    crop = obj[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]  # the object's bounding box
    k = 1 + 2 * int(rng.integers(0, max(2, size // 32)))  # odd dilation kernel, up to ~size/16
    crop = cv2.dilate(crop, np.ones((k, k), np.uint8))
    ch, cw = min(crop.shape[0], size), min(crop.shape[1], size)
    y0, x0 = int(rng.integers(0, size - ch + 1)), int(rng.integers(0, size - cw + 1))
    hole[y0 : y0 + ch, x0 : x0 + cw] = crop[:ch, :cw] > 0
    return hole


class ObjectMaskSampler:
    """Training masks: object silhouettes mixed with free-form strokes and boxes.

    Same ``sample`` call as :class:`inpnet.masks.mixture.MaskMixture`, plus optional ``keys`` (the
    batch's shard keys) that switch on the exclusion of objects mostly inside the hole.

    Args:
        object_dir: folder of ``<key>.png`` instance maps (see the module docstring).
        object_prob: probability that a hole starts from an object silhouette.
        min_ratio, max_ratio: target hole share of the free-form part (max ramps up over
            ``warmup_steps``, as in the mask mixture).
        overlap: exclusion threshold (share of an object's area inside the hole).
        max_area: segments larger than this share of the image are background.
    """

    def __init__(
        self,
        object_dir: str | Path,
        *,
        object_prob: float = 0.5,
        min_ratio: float = 0.0,
        max_ratio: float = 0.75,
        warmup_steps: int = 0,
        overlap: float = 0.5,
        max_area: float = 0.5,
    ) -> None:
        self.object_dir = Path(object_dir)
        if not self.object_dir.is_dir():
            raise MaskError(
                f"train.masks.object_dir {str(self.object_dir)!r} is not a folder of <key>.png instance maps"
            )
        self.paths = {p.stem: p for p in sorted(self.object_dir.glob("*.png"))}
        if not self.paths:
            raise MaskError(f"train.masks.object_dir {str(self.object_dir)!r} holds no .png instance maps")
        self.names = sorted(self.paths)
        self.object_prob, self.min_ratio, self.max_ratio = object_prob, min_ratio, max_ratio
        self.warmup_steps, self.overlap, self.max_area = warmup_steps, overlap, max_area
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._warned_no_keys = False

    @classmethod
    def from_config(cls, cfg: TrainMasksConfig) -> ObjectMaskSampler:
        """Build from ``train.masks``; ``cfg.object_dir`` must be set."""
        if cfg.object_dir is None:
            raise MaskError("train.masks.object_dir is not set; object-aware masks need a folder of instance maps")
        return cls(
            cfg.object_dir,
            object_prob=cfg.object_prob,
            min_ratio=cfg.min_ratio,
            max_ratio=cfg.max_ratio,
            warmup_steps=cfg.warmup_steps,
            overlap=cfg.object_overlap,
            max_area=cfg.object_max_area,
        )

    def labels(self, name: str, size: int) -> np.ndarray:
        """The instance map ``<name>.png`` at (size, size), cached."""
        key = (name, size)
        if key not in self._cache:
            self._cache[key] = load_instance_map(self.paths[name], size)
        return self._cache[key]

    def current_max_ratio(self, step: int) -> float:
        """The upper end of the free-form ratio range at ``step``: the mask mixture's ramp."""
        return ramp_max_ratio(step, self.min_ratio, self.max_ratio, self.warmup_steps)

    def sample_one(self, size: int, step: int, rng: np.random.Generator, key: str | None = None) -> np.ndarray:
        """One bool (size, size) hole; with ``key`` its map's covered objects are excluded."""
        hi = self.current_max_ratio(step)
        ratio = float(rng.uniform(self.min_ratio, max(self.min_ratio, hi)))
        if rng.random() < self.object_prob:
            shape_from = self.names[int(rng.integers(len(self.names)))]
            hole = object_hole(self.labels(shape_from, size), size, rng, max_area=self.max_area)
            # half of the object holes get a few strokes too, as CM-GAN mixes both kinds
            if rng.random() < 0.5:
                hole |= free_form_mask(size, size, ratio * 0.5, rng, preset="thin")
        else:
            hole = free_form_mask(size, size, ratio, rng, preset=str(rng.choice(["medium", "thick"])))
        if key is not None and key in self.paths:
            hole = exclude_covered_objects(hole, self.labels(key, size), overlap=self.overlap, max_area=self.max_area)
        return hole

    def sample(
        self,
        batch: int,
        height: int,
        width: int,
        step: int,
        generator: np.random.Generator,
        keys: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """A float (B, 1, H, W) batch of 0/1 masks (1 = hole)."""
        if height != width:
            raise MaskError(f"object masks are square; got {height}x{width}")
        if keys is not None and len(keys) != batch:
            raise MaskError(f"got {len(keys)} keys for a batch of {batch}")
        if keys is None and not self._warned_no_keys:
            log.warning("object masks sampled without image keys: objects inside the hole are not excluded")
            self._warned_no_keys = True
        holes = [self.sample_one(height, step, generator, None if keys is None else keys[i]) for i in range(batch)]
        return torch.from_numpy(np.stack(holes)[:, None].astype(np.float32))  # (B, 1, H, W)
