"""Object-aware training masks (CM-GAN, Zheng et al. 2022, "object-aware training").

Real users mostly erase *objects*, so CM-GAN trains on holes shaped like objects as well as
on free-form strokes and boxes. It also keeps the model from learning to invent objects: an
object of the training image that lies mostly inside the hole would teach the generator to
paint a whole object from nothing, so such objects are taken *out* of the hole (they stay
visible); objects only partly covered stay in the hole, so that completing a partly visible
object is still learned.

Folder format (``train.masks.object_dir``; variants with ``train.masks.object_aware``, the
``cmgan_b*`` ones, use it)::

    <object_dir>/<key>.png     the segment map of the training image whose shard key is <key>
    <object_dir>/<key>.json    optional: which segments are "things" (panoptic annotations)

A segment map is a PNG whose distinct values label segments; 0 is void:
- single-channel 8- or 16-bit PNGs: each non-zero value is one segment;
- RGB PNGs (COCO panoptic format): id = R + 256 G + 256^2 B.
The map covers the whole JPEG of the shard (any resolution with the JPEG's aspect ratio,
e.g. a panoptic prediction made on the original image); it is cut with the image's own crop.

The JSON sidecar lists the segments as a list, or under ``segments_info`` as COCO panoptic
and detectron2 write them: ``[{"id": 3, "isthing": true}, {"id": 7, "isthing": false}, ...]``.
With it only *thing* segments (people, cars, furniture: COCO's thing classes) are objects,
as in the reference (htzheng/CM-GAN-Inpainting ``mask_generator.py``); "stuff" (sky, road,
wall) never is. Without it every non-zero id counts as a thing (an instance map). In both
cases a segment larger than ``object_max_area`` of the crop counts as background.

Rules, after the reference:
- **shapes**: an object hole is a thing segment of a random map of the folder, dilated and
  placed at a random position (a distractor silhouette); half of them get thin strokes too;
- **exclusion**: when the training image's map is known (``keys=``), each of its thing
  segments with more than ``object_overlap`` of its area inside the hole is removed from
  the hole, *dilated* by 2-4 px (at 512 px; scaled with the size) so that no object edge
  stays in the hole. (The reference erodes here, ``binary_erosion`` of the excluded
  region, under a comment that says dilate; we follow the stated intent.) The map is cut
  with the image's crop (``crops=``, the loader's :class:`~inpnet.data.loader.Crop`: the
  same box, resize and flip); without crops it falls back to the evaluation transform
  (resize shortest side + centre crop), which only matches centre-cropped images;
- **redraw**: a mask whose hole covers less than 5% or more than 95% of the image is drawn
  again, up to 6 times. The reference's masks use 1 = known and it redraws while their mean
  exceeds 0.95, i.e. while the hole is under 5% (exclusion can empty a hole); a hole over
  95% leaves nothing to condition on and is refused as well.

Free-form strokes and boxes come from :func:`inpnet.masks.freeform.free_form_mask`.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from inpnet.config import TrainMasksConfig
from inpnet.data.jpeg import BadImage, open_image
from inpnet.errors import MaskError
from inpnet.masks.freeform import free_form_mask
from inpnet.masks.mixture import ramp_max_ratio

if TYPE_CHECKING:
    from inpnet.data.loader import Crop

__all__ = [
    "ObjectMaskSampler",
    "crop_labels",
    "exclude_covered_objects",
    "load_instance_map",
    "load_things",
    "object_hole",
    "object_ids",
]

HOLE_SHARE_RANGE = (0.05, 0.95)  # a mask whose hole share falls outside is redrawn (see the module docstring)
MAX_REDRAWS = 6  # the reference's max_trail
_CACHE_MAPS = 512  # full-resolution maps kept in memory (object shapes come back often; exclusion maps rarely)

log = logging.getLogger(__name__)


def load_instance_map(path: Path, size: int | None = None) -> np.ndarray:
    """Read a segment PNG into an int64 (H, W) label map (0 = void).

    With ``size``, the map is resized (nearest, shortest side to ``size``) and centre-cropped
    to (size, size): the evaluation transform.
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


def load_things(path: Path) -> frozenset[int] | None:
    """The thing segment ids of a panoptic JSON sidecar, or None when there is no sidecar.

    Accepts a list of segments or a mapping with ``segments_info``; every segment needs
    ``id`` and ``isthing`` (see the module docstring).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        segments = data["segments_info"] if isinstance(data, dict) else data
        return frozenset(int(seg["id"]) for seg in segments if bool(seg["isthing"]))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise MaskError(
            f"{path}: not a panoptic segment list ({type(err).__name__}: {err}); expected "
            '[{"id": <int>, "isthing": <bool>}, ...] or {"segments_info": [...]}'
        ) from None


def _resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    # cv2 cannot resize int64; int32 holds every COCO panoptic id (< 2^24)
    resized = cv2.resize(labels.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST)
    return resized.astype(np.int64)


def _resize_center_crop(labels: np.ndarray, size: int) -> np.ndarray:
    h, w = labels.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    resized = _resize_nearest(labels, nh, nw)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return resized[y0 : y0 + size, x0 : x0 + size]


def crop_labels(labels: np.ndarray, crop: Crop, size: int, *, name: str = "map") -> np.ndarray:
    """Cut a full-image label map exactly as the loader cut the image: ``crop``'s box (in the
    JPEG's pixels, scaled to the map's resolution), resized to (size, size), then flipped.

    Raises :class:`MaskError` when the map's aspect ratio is not the JPEG's (another image's map).
    """
    mh, mw = labels.shape
    fy, fx = mh / crop.source_height, mw / crop.source_width
    if abs(fy - fx) > 0.02 * max(fy, fx) + 1.0 / min(crop.source_height, crop.source_width):
        raise MaskError(
            f"{name}: segment map is {mw}x{mh} but its image is {crop.source_width}x{crop.source_height} "
            "(another aspect ratio): the map must cover the whole image of its key"
        )
    y0, x0 = round(crop.top * fy), round(crop.left * fx)
    y1, x1 = max(y0 + 1, round((crop.top + crop.height) * fy)), max(x0 + 1, round((crop.left + crop.width) * fx))
    out = _resize_nearest(labels[y0:y1, x0:x1], size, size)  # (size, size)
    return np.ascontiguousarray(out[:, ::-1]) if crop.flipped else out


def object_ids(labels: np.ndarray, max_area: float, things: Collection[int] | None = None) -> list[int]:
    """Ids of the segments that count as objects: non-zero, things (when ``things`` is given)
    and at most ``max_area`` of the map."""
    ids, counts = np.unique(labels, return_counts=True)
    limit = max_area * labels.size
    return [
        int(i)
        for i, c in zip(ids, counts, strict=True)
        if i != 0 and c <= limit and (things is None or int(i) in things)
    ]


def _dilate(region: np.ndarray, iterations: int) -> np.ndarray:
    """Binary dilation by ``iterations`` steps of the 4-neighbour cross (scipy's default structure)."""
    if iterations <= 0:
        return region
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    grown = cv2.dilate(region.astype(np.uint8), cross, iterations=iterations)
    return np.asarray(grown > 0)


def exclude_covered_objects(
    hole: np.ndarray,
    labels: np.ndarray,
    *,
    overlap: float = 0.5,
    max_area: float = 0.5,
    things: Collection[int] | None = None,
    dilation: int = 0,
) -> np.ndarray:
    """Remove from ``hole`` every object of ``labels`` with more than ``overlap`` of its area inside it.

    Args:
        hole: bool (H, W), True = hole.
        labels: int (H, W) segment map of the same crop, 0 = void.
        overlap: share of an object's area above which the object is taken out of the hole.
        max_area: segments larger than this share of the image are background, never excluded.
        things: the thing ids (panoptic sidecar); None = every non-zero id.
        dilation: the excluded objects grow by this many pixels before they leave the hole.
    """
    if hole.shape != labels.shape:
        raise MaskError(f"hole shape {hole.shape} != instance map shape {labels.shape}")
    excluded = np.zeros_like(hole, dtype=bool)
    for i in object_ids(labels, max_area, things):
        obj = labels == i
        if np.count_nonzero(hole & obj) > overlap * np.count_nonzero(obj):
            excluded |= obj
    out: np.ndarray = hole & ~_dilate(excluded, dilation)
    return out


def object_hole(
    labels: np.ndarray,
    size: int,
    rng: np.random.Generator,
    *,
    max_area: float = 0.5,
    things: Collection[int] | None = None,
) -> np.ndarray:
    """One object silhouette from ``labels``, dilated and placed at a random spot: bool (size, size).

    Returns an empty mask when the map holds no object.
    """
    ids = object_ids(labels, max_area, things)
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
    batch's shard keys), which switch on the exclusion of objects mostly inside the hole, and
    ``crops`` (the loader's, :attr:`aligns_to_crops`), which cut each map as its image was cut.

    Args:
        object_dir: folder of ``<key>.png`` segment maps (see the module docstring).
        object_prob: probability that a hole starts from an object silhouette.
        min_ratio, max_ratio: target hole share of the free-form part (max ramps up over
            ``warmup_steps``, as in the mask mixture).
        overlap: exclusion threshold (share of an object's area inside the hole).
        max_area: segments larger than this share of the image are background.
    """

    aligns_to_crops = True  # MaskedBatches passes crops= to sample()

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
        self._maps: OrderedDict[str, tuple[np.ndarray, frozenset[int] | None]] = OrderedDict()
        self._warned: set[str] = set()

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

    def _map(self, name: str) -> tuple[np.ndarray, frozenset[int] | None]:
        """The full-resolution map ``<name>.png`` and its thing ids (``<name>.json``), LRU-cached."""
        if name in self._maps:
            self._maps.move_to_end(name)
            return self._maps[name]
        path = self.paths[name]
        entry = (load_instance_map(path), load_things(path.with_suffix(".json")))
        self._maps[name] = entry
        if len(self._maps) > _CACHE_MAPS:
            self._maps.popitem(last=False)
        return entry

    def labels(self, name: str, size: int, crop: Crop | None = None) -> np.ndarray:
        """The map ``<name>.png`` at (size, size): cut with ``crop``, else resized and centre-cropped."""
        full, _ = self._map(name)
        if crop is None:
            return _resize_center_crop(full, size)
        return crop_labels(full, crop, size, name=str(self.paths[name]))

    def things(self, name: str) -> frozenset[int] | None:
        """The thing ids of ``<name>``'s sidecar (None: no sidecar, every segment is a thing)."""
        return self._map(name)[1]

    def current_max_ratio(self, step: int) -> float:
        """The upper end of the free-form ratio range at ``step``: the mask mixture's ramp."""
        return ramp_max_ratio(step, self.min_ratio, self.max_ratio, self.warmup_steps)

    def _draw(self, size: int, step: int, rng: np.random.Generator) -> np.ndarray:
        hi = self.current_max_ratio(step)
        ratio = float(rng.uniform(self.min_ratio, max(self.min_ratio, hi)))
        if rng.random() < self.object_prob:
            shape_from = self.names[int(rng.integers(len(self.names)))]
            labels = self.labels(shape_from, size)
            hole = object_hole(labels, size, rng, max_area=self.max_area, things=self.things(shape_from))
            # half of the object holes get a few strokes too, as CM-GAN mixes both kinds
            if rng.random() < 0.5:
                hole |= free_form_mask(size, size, ratio * 0.5, rng, preset="thin")
            return hole
        return free_form_mask(size, size, ratio, rng, preset=str(rng.choice(["medium", "thick"])))

    def sample_one(
        self, size: int, step: int, rng: np.random.Generator, key: str | None = None, crop: Crop | None = None
    ) -> np.ndarray:
        """One bool (size, size) hole; with ``key`` its map's covered things are excluded (the map
        cut with ``crop``); redrawn while its hole share is outside :data:`HOLE_SHARE_RANGE`."""
        labels = things = None
        if key is not None and key in self.paths:
            labels, things = self.labels(key, size, crop), self.things(key)
        lo, hi = HOLE_SHARE_RANGE
        for _ in range(1 + MAX_REDRAWS):
            hole = self._draw(size, step, rng)
            if labels is not None:
                grow = int(rng.integers(2, 5))  # the reference's 2-4 px at 512 px
                dilation = max(1, round(grow * size / 512))
                hole = exclude_covered_objects(
                    hole, labels, overlap=self.overlap, max_area=self.max_area, things=things, dilation=dilation
                )
            if lo <= hole.mean() <= hi:
                break
        return hole

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self._warned:
            log.warning(message)
            self._warned.add(what)

    def sample(
        self,
        batch: int,
        height: int,
        width: int,
        step: int,
        generator: np.random.Generator,
        keys: Sequence[str] | None = None,
        crops: Sequence[Crop] | None = None,
    ) -> torch.Tensor:
        """A float (B, 1, H, W) batch of 0/1 masks (1 = hole)."""
        if height != width:
            raise MaskError(f"object masks are square; got {height}x{width}")
        if keys is not None and len(keys) != batch:
            raise MaskError(f"got {len(keys)} keys for a batch of {batch}")
        if crops is not None and len(crops) != batch:
            raise MaskError(f"got {len(crops)} crops for a batch of {batch}")
        if keys is None:
            self._warn_once("keys", "object masks sampled without image keys: objects inside the hole are not excluded")
        elif crops is None:
            self._warn_once(
                "crops",
                "object masks sampled without the images' crops: maps are centre-cropped, aligned only with "
                "centre-cropped images",
            )
        missing = [k for k in keys or () if k not in self.paths]
        if missing:
            self._warn_once(
                "missing",
                f"train.masks.object_dir {str(self.object_dir)!r} has no map for image {missing[0]!r} (and maybe "
                "others): their holes keep the objects they cover",
            )
        holes = [
            self.sample_one(
                height,
                step,
                generator,
                None if keys is None else keys[i],
                None if crops is None else crops[i],
            )
            for i in range(batch)
        ]
        return torch.from_numpy(np.stack(holes)[:, None].astype(np.float32))  # (B, 1, H, W)
