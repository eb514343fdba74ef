"""Shards to batches: ``make_loader`` for training and evaluation, ``iter_eval_images`` for metrics.

A WebDataset pipeline per DataLoader worker::

    shard list ─ node split (rank) ─ worker split ─ tar samples ─ shuffle buffer ─ decode + crop
    (seeded by epoch)                                               (train only)

Splitting is explicit: shard ``i`` goes to rank ``i % world_size``, then to worker ``j %
num_workers`` of that rank, so in a non-resampled epoch ranks x workers see disjoint
samples that together cover every sample once. Unequal shard counts would give DDP ranks
unequal batch counts (a hang at the next collective), so with ``world_size > 1`` the shard
count must divide by ``world_size * num_workers`` (the shard stage rounds it to
``data.shard.shard_multiple``). Even then, members the shard stage rejected leave ranks a
few samples apart: DDP training should use ``resampled=True``, where each rank and worker
draws shards with replacement from its own seeded stream, forever.

Shards are local files (a split folder: a header index, then one ``pread`` a member) or
URLs (``s3://``, ``http(s)://``, ``pipe:``; streamed and checked against the manifest
beside them, :mod:`inpnet.data.urls`); both go through the same split, shuffle and decode.

Each training sample also carries its crop (:class:`Crop`: the box in the JPEG's pixels,
the JPEG's size, the flip), so that data aligned with the image, such as CM-GAN's object
maps (:mod:`inpnet.masks.objects`), can be cropped exactly as the image was.

Decoding uses libjpeg-turbo's DCT scaling (simplejpeg ``min_height``/``min_width``): a
crop that is resized to ``image_size`` is decoded at the smallest 1/8..8/8 scale that
still leaves it at least ``image_size`` pixels, which skips most of the decoding work on
512 px Places365 images. Batches travel from workers as uint8 and become float in [0, 1]
in the consuming process (4x less inter-process traffic).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from inpnet.data.jpeg import DEFAULT_MAX_PIXELS, decode_rgb, scaled_request
from inpnet.data.manifest import ShardRecord, load_manifest
from inpnet.data.tarindex import index_tar
from inpnet.data.urls import ShardList, is_url, resolve_remote, stream_members
from inpnet.errors import DataError

__all__ = ["Crop", "ShardLoader", "decode_crop", "iter_eval_images", "jpeg_size", "make_loader", "shard_urls"]

Box = tuple[int, int, int, int]  # top, left, height, width in original pixels


class Crop(NamedTuple):
    """How one sample was cut from its JPEG: ``box`` rows/columns of the (height, width)
    source, resized to the output size, then mirrored left-right when ``flipped``."""

    top: int
    left: int
    height: int
    width: int
    source_height: int
    source_width: int
    flipped: bool


def shard_urls(shards: str | Path) -> list[str]:
    """The shards of a split folder (every listed shard must exist) or of a URL spec, in reading order."""
    return _split(shards).urls


# "s3://b/k" after pathlib.Path: Path() merges the two slashes, and no file of that name exists
_COLLAPSED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/[^/]")


def _split(shards: str | Path) -> ShardList:
    """Shard paths or URLs, the pixel limit the shards were written with (images above it are
    refused), and, for remote shards, the manifest record each is checked against.

    A local split folder gives local paths and no records: those shards are read by the
    fast path (a header index and ``pread``), the others stream (:mod:`inpnet.data.urls`).
    """
    text = str(shards)
    if isinstance(shards, str) and is_url(text):
        return resolve_remote(text)
    if _COLLAPSED_URL.match(text) and not Path(text).exists():
        raise DataError(
            f"{text}: looks like a URL that went through pathlib.Path (one slash after the scheme); pass it as a str"
        )
    manifest = load_manifest(shards)
    urls = [str(Path(shards) / s.name) for s in manifest.shards]
    missing = [u for u in urls if not Path(u).is_file()]
    if missing:
        raise DataError(
            f"{shards}: {len(missing)} shards listed in manifest.json are missing (e.g. {missing[0]}); re-run the shard stage"
        )
    return ShardList(urls, int(manifest.settings.get("max_pixels", DEFAULT_MAX_PIXELS)))


# ------------------------------------------------------------------- geometry, decoding


def random_resized_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """A random crop of ``scale`` of the area and aspect ``ratio`` (torchvision's recipe)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return center_box(height, width)


def center_box(height: int, width: int) -> Box:
    """The centred square of side ``min(height, width)``: resize-shortest-side + centre crop."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def jpeg_size(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of a JPEG from its header."""
    import simplejpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        height, width = decode_rgb(data, max_pixels=max_pixels).shape[:2]  # a colour space libjpeg cannot convert; rare
    return int(height), int(width)


def decode_crop(
    data: bytes,
    box: Box | None,
    size: int,
    *,
    rng: np.random.Generator | None = None,
    scale: tuple[float, float] = (0.25, 1.0),
    fast: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode a JPEG, crop and resize to (size, size, 3) uint8.

    ``box=None`` draws a random resized crop from ``rng`` (training); pass
    :func:`center_box` for evaluation. The decode happens at the smallest power-of-two
    DCT scale at which the crop keeps ``size`` pixels; ``fast`` (training) also takes
    libjpeg's fast integer DCT and bilinear resizing. An image over ``max_pixels`` raises
    :class:`~inpnet.data.jpeg.BadImage` before any decoding.
    """
    import cv2

    height, width = jpeg_size(data, max_pixels=max_pixels)
    if box is None:
        assert rng is not None, "a random crop needs rng"
        box = random_resized_box(height, width, rng, scale)
    top, left, h, w = box
    min_h, min_w = scaled_request(height, width, h, w, size)
    pixels = decode_rgb(data, min_height=min_h, min_width=min_w, fast=fast, max_pixels=max_pixels)
    fy, fx = pixels.shape[0] / height, pixels.shape[1] / width
    y0, x0 = round(top * fy), round(left * fx)
    y1, x1 = max(y0 + 1, round((top + h) * fy)), max(x0 + 1, round((left + w) * fx))
    crop = pixels[y0:y1, x0:x1]
    # After the power-of-two DCT scale the crop is at most 2x the output, where bilinear
    # is fine for training; evaluation (and larger factors) use the area filter.
    linear = fast and crop.shape[0] <= 2 * size and crop.shape[1] <= 2 * size
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_AREA)


# ----------------------------------------------------------------------- pipeline stages


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _shard_source(urls: list[str], *, rank: int, world_size: int) -> Iterator[dict[str, str]]:
    """Explicit node then worker split of a fixed shard order: disjoint and covering."""
    worker, workers = _worker()
    for url in urls[rank::world_size][worker::workers]:
        yield {"url": url}


def _resampled_source(urls: list[str], *, seed: int, epoch: int, rank: int) -> Iterator[dict[str, str]]:
    """Shards drawn with replacement, forever, from a stream seeded by (seed, epoch, rank, worker)."""
    worker, _ = _worker()
    rng = np.random.default_rng([seed, epoch, rank, worker])
    while True:
        yield {"url": urls[int(rng.integers(len(urls)))]}


def _tar_samples(
    sources: Iterable[dict[str, str]], *, remote: Mapping[str, ShardRecord | None]
) -> Iterator[dict[str, Any]]:
    """Samples of each shard: consecutive members sharing a key, as WebDataset groups them.

    A shard in ``remote`` (a URL, with its manifest record) is streamed and checked by
    :func:`~inpnet.data.urls.stream_members`; a local one is read through its header index.
    """
    for source in sources:
        url = source["url"]
        members = stream_members(url, remote[url]) if url in remote else _local_members(url)
        sample: dict[str, Any] = {}
        for name, data in members:
            base = name.rsplit("/", 1)[-1]
            key, dot, ext = base.partition(".")
            if not dot:
                continue
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            if not sample:
                sample = {"__key__": key, "__url__": url}
            sample[ext] = data
        if sample:
            yield sample


def _local_members(path: str) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of each regular file of a local tar: replaces ``webdataset.tarfile_to_samples``
    for the local shards a manifest lists. Python's streaming ``tarfile`` costs about 0.4 ms a
    member here (1.3 ms a sample, as much as decoding it), the header-only index plus one
    ``pread`` per member a few us."""
    with open(path, "rb", buffering=0) as handle:
        fd = handle.fileno()
        for member in index_tar(path):
            if member.kind == "file":
                yield member.name, os.pread(fd, member.size, member.offset)


def _shuffle(
    samples: Iterable[dict[str, Any]], *, bufsize: int, seed: int, epoch: int, rank: int
) -> Iterator[dict[str, Any]]:
    worker, _ = _worker()
    if bufsize <= 1:
        yield from samples
        return
    rng = np.random.default_rng([seed, epoch, rank, worker, 1])
    buffer: list[dict[str, Any]] = []
    for sample in samples:
        if len(buffer) < bufsize:
            buffer.append(sample)
            continue
        i = int(rng.integers(bufsize))
        yield buffer[i]
        buffer[i] = sample
    rng.shuffle(buffer)
    yield from buffer


def _decode(
    samples: Iterable[dict[str, Any]],
    *,
    size: int,
    train: bool,
    seed: int,
    epoch: int,
    rank: int,
    scale: tuple[float, float],
    max_pixels: int,
) -> Iterator[dict[str, Any]]:
    import cv2

    worker, _ = _worker()
    rng = np.random.default_rng([seed, epoch, rank, worker, 2])
    for sample in samples:
        data = sample["jpg"]
        try:
            height, width = jpeg_size(data, max_pixels=max_pixels)
            flipped = False
            if train:  # the box and flip draws, in this order, are those decode_crop(box=None) made
                box = random_resized_box(height, width, rng, scale)
                image = decode_crop(data, box, size, fast=True, max_pixels=max_pixels)
                flipped = bool(rng.random() < 0.5)
                if flipped:
                    image = cv2.flip(image, 1)  # SIMD; a numpy [:, ::-1] copy is 4x slower
            else:
                box = center_box(height, width)
                image = decode_crop(data, box, size, max_pixels=max_pixels)
            label = int(sample["cls"])
        except (ValueError, OSError, KeyError) as err:
            raise DataError(
                f"{sample.get('__url__')}: sample {sample.get('__key__')!r} is unreadable ({err}); re-run the shard stage"
            ) from None
        chw = np.ascontiguousarray(image.transpose(2, 0, 1))  # (S, S, 3) -> (3, S, S)
        crop = Crop(*box, height, width, flipped)
        yield {"image": chw, "label": label, "key": sample["__key__"], "crop": crop}


def _pipeline(
    shards: ShardList,
    *,
    size: int,
    train: bool,
    rank: int,
    world_size: int,
    seed: int,
    epoch: int,
    resampled: bool,
    shuffle_buffer: int,
    scale: tuple[float, float],
) -> Any:
    import webdataset as wds

    urls, remote = shards.urls, shards.records
    if resampled:
        source = partial(_resampled_source, urls, seed=seed, epoch=epoch, rank=rank)
    else:
        order = list(urls)
        if train:  # same permutation on every rank, so the split stays disjoint
            np.random.default_rng([seed, epoch]).shuffle(order)
        source = partial(_shard_source, order, rank=rank, world_size=world_size)
    stages: list[Any] = [_Restartable(source), partial(_tar_samples, remote=remote)]
    if train:
        stages.append(partial(_shuffle, bufsize=shuffle_buffer, seed=seed, epoch=epoch, rank=rank))
    stages.append(
        partial(
            _decode,
            size=size,
            train=train,
            seed=seed,
            epoch=epoch,
            rank=rank,
            scale=scale,
            max_pixels=shards.max_pixels,
        )
    )
    return wds.DataPipeline(*stages)


class _Restartable(torch.utils.data.IterableDataset[dict[str, str]]):
    """An iterable that calls ``make()`` afresh on every ``iter`` (inside each worker)."""

    def __init__(self, make: Callable[[], Iterator[dict[str, str]]]) -> None:
        self.make = make

    def __iter__(self) -> Iterator[dict[str, str]]:
        return self.make()


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    from torch.utils.data import default_collate

    return {
        # default_collate stacks straight into shared memory inside a worker, saving the
        # copy that sending an ordinary tensor to the main process would make
        "image": default_collate([torch.from_numpy(s["image"]) for s in samples]),  # (B, 3, S, S) uint8
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "key": [s["key"] for s in samples],
        "crop": torch.tensor([tuple(s["crop"]) for s in samples], dtype=torch.long),  # (B, 7): Crop's fields
    }


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # one decode per worker process; OpenCV's own threads only contend


def _to_float(batch: dict[str, Any]) -> dict[str, Any]:
    return {**batch, "image": _to_unit(batch["image"])}


def _to_unit(image: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1]; a multiply is about twice as fast as a divide here."""
    return image.to(torch.float32).mul_(1.0 / 255.0)


class ShardLoader:
    """Iterable of batches ``{"image": (B,3,S,S) float [0,1], "label": (B,) long, "key": list[str],
    "crop": (B, 7) long}`` (the crop rows are :class:`Crop` fields, in order)."""

    def __init__(self, loader: torch.utils.data.DataLoader[dict[str, Any]], num_shards: int) -> None:
        self.loader = loader
        self.num_shards = num_shards

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            yield _to_float(batch)


def make_loader(
    shards: str | Path,
    *,
    image_size: int,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    epoch: int = 0,
    resampled: bool = False,
    shuffle_buffer: int = 500,
    crop_scale: tuple[float, float] = (0.25, 1.0),
    start_method: str = "forkserver",
) -> ShardLoader:
    """Batches from the split folder ``shards`` (with manifest.json), or from shards on
    object storage: a URL spec as a ``str`` (``s3://bucket/shards/train``,
    ``s3://bucket/shards/train/train-{000000..000011}.tar``, ``https://...``, ``pipe:CMD``;
    the forms are in :mod:`inpnet.data.urls`).

    train=True: seeded shard and sample shuffle (new order per ``epoch``), random resized
    crop of ``crop_scale`` of the area, horizontal flip. train=False: fixed order, resize
    shortest side + centre crop. ``resampled=True``: infinite, shards drawn with
    replacement per rank and worker (use it for DDP training).

    Workers start with ``start_method`` "forkserver" (clean children forked from a small
    server process): a plain fork copies the parent's threads and locks, and after a
    Prefect flow has run in the process (as in ``pipelines/``) forked workers exit with
    code 1 at shutdown.
    """
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} is outside world_size {world_size}")
    split = _split(shards)
    streams = world_size * max(1, num_workers)
    if not resampled and world_size > 1 and len(split.urls) % streams:
        raise DataError(
            f"{shards}: {len(split.urls)} shards do not split evenly over {world_size} ranks x {max(1, num_workers)} workers"
            f" (DDP would hang on unequal batch counts); re-shard with data.shard.shard_multiple = {streams} or use resampled=True"
        )
    dataset = _pipeline(
        split,
        size=image_size,
        train=train,
        rank=rank,
        world_size=world_size,
        seed=seed,
        epoch=epoch,
        resampled=resampled,
        shuffle_buffer=shuffle_buffer,
        scale=crop_scale,
    )
    context = None
    if num_workers:
        import multiprocessing

        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            context.set_forkserver_preload([__name__])  # imports torch & co. once, in the server
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if num_workers else None,
        multiprocessing_context=context,
    )
    return ShardLoader(loader, len(split.urls))


def iter_eval_images(shards: str | Path, *, image_size: int) -> Iterator[tuple[str, torch.Tensor]]:
    """``(key, (3, S, S) float [0,1])`` for every sample once, in manifest and tar order."""
    split = _split(shards)
    pipeline = _pipeline(
        split,
        size=image_size,
        train=False,
        rank=0,
        world_size=1,
        seed=0,
        epoch=0,
        resampled=False,
        shuffle_buffer=0,
        scale=(1.0, 1.0),
    )
    for sample in pipeline:
        yield sample["key"], _to_unit(torch.from_numpy(sample["image"]))
