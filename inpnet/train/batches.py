"""The trainer's view of the data: a resumable stream of image batches, and sample grids.

:class:`BatchStream` wraps the shard loader and remembers (epoch, batches taken in the
epoch), so that a resumed run re-opens the same epoch and skips exactly the batches it
had consumed. In resampled mode (DDP: an infinite stream, so ranks never see unequal
counts) the stream is re-opened with the next epoch every ``resampled_epoch`` batches,
which bounds how much a resume has to skip.

:class:`MaskedBatches` draws each step's training masks. A sampler that declares
``aligns_to_crops`` (CM-GAN's :class:`~inpnet.masks.objects.ObjectMaskSampler`) also gets
each image's crop (:class:`~inpnet.data.loader.Crop`, from the loader's ``crop`` rows), so
that it cuts the image's object map with the very box and flip the image was cut with.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from inpnet.errors import DataError
from inpnet.models.composite import composite, masked_input

if TYPE_CHECKING:
    from inpnet.data.loader import Crop

log = logging.getLogger(__name__)

__all__ = ["BatchStream", "LoaderFactory", "MaskedBatches", "crops_of", "sample_grid"]

LoaderFactory = Callable[..., Iterable[dict[str, Any]]]


def _default_factory() -> LoaderFactory:
    from inpnet.data.loader import make_loader

    return make_loader


class BatchStream:
    """Endless training batches (B,3,S,S) in [0,1] with a resumable position.

    Args:
        factory: ``make_loader``-compatible callable (keyword arguments as in the contract).
        epoch, position: where to continue; ``position`` batches of ``epoch`` are skipped.
    """

    def __init__(
        self,
        shards: str | Path,
        *,
        image_size: int,
        batch_size: int,
        num_workers: int,
        rank: int,
        world_size: int,
        seed: int,
        resampled: bool,
        epoch: int = 0,
        position: int = 0,
        resampled_epoch: int = 1000,
        factory: LoaderFactory | None = None,
    ) -> None:
        self.shards = shards  # a split folder, or a URL spec (str)
        self._kwargs = dict(
            image_size=image_size,
            batch_size=batch_size,
            train=True,
            num_workers=num_workers,
            rank=rank,
            world_size=world_size,
            seed=seed,
            resampled=resampled,
        )
        self._factory = factory or _default_factory()
        self._seed = seed
        self._rank = rank
        self.resampled = resampled
        self.resampled_epoch = resampled_epoch
        self.epoch = epoch
        self.position = 0
        self._it: Iterator[dict[str, Any]] | None = None
        self._open(skip=position)

    def _open(self, skip: int) -> None:
        # DataLoader draws its workers' base seed from the global torch RNG when iterated;
        # fixing it here makes the worker seeds a function of (seed, epoch, rank) only, the
        # same in an uninterrupted and in a resumed run.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seed * 1_000_003 + self.epoch * 1009 + self._rank)
            self._it = iter(self._factory(self.shards, epoch=self.epoch, **self._kwargs))
        self.position = 0
        for _ in range(skip):
            if self._take() is None:
                raise DataError(
                    f"{self.shards}: cannot skip {skip} batches of epoch {self.epoch} on resume; the shards changed"
                )

    def _take(self) -> dict[str, Any] | None:
        assert self._it is not None
        try:
            batch = next(self._it)
        except StopIteration:
            return None
        self.position += 1
        return batch

    def next(self) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
        """The next (image batch, sample keys, (B, 7) crop rows or None when the loader gives
        none); rolls over to the next epoch when one is exhausted."""
        if self.resampled and self.position >= self.resampled_epoch:
            self.epoch += 1
            self._open(skip=0)
        batch = self._take()
        if batch is None:
            if self.position == 0:
                raise DataError(
                    f"{self.shards}: the loader yielded no batches (empty shards, or fewer images than one batch?)"
                )
            self.epoch += 1
            self._open(skip=0)
            batch = self._take()
            if batch is None:
                raise DataError(f"{self.shards}: the loader yielded no batches in epoch {self.epoch}")
        return batch["image"], list(batch.get("key", [])), batch.get("crop")

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


class MaskedBatches:
    """A step's micro-batches with their training masks; the next step's are prepared early.

    Drawing masks (Python and OpenCV per image) can cost as much as a GPU step, so while
    step ``s`` computes, a background thread draws the masks of step ``s + 1`` from the one
    seeded generator. :meth:`state` returns the data position and generator state *before*
    that prefetch, so a checkpoint resumes with exactly the batches and masks of ``s + 1``.

    Args:
        masks: a :class:`inpnet.masks.MaskMixture` (``sample(b, h, w, step=, generator=, keys=)``).
        rng: this rank's mask generator; only the background thread draws from it.
    """

    def __init__(self, stream: BatchStream, masks: Any, rng: np.random.Generator, micro_batches: int) -> None:
        self.stream = stream
        self.masks = masks
        self.rng = rng
        self.micro_batches = micro_batches
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="masks")
        self._pending: tuple[int, dict[str, Any], Future[list[tuple[torch.Tensor, torch.Tensor]]]] | None = None

    def _draw(
        self, images: list[tuple[torch.Tensor, list[str], torch.Tensor | None]], step: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for image, keys, crop_rows in images:
            b, _, h, w = image.shape
            extra: dict[str, Any] = {}
            if getattr(self.masks, "aligns_to_crops", False) and crop_rows is not None:
                extra["crops"] = crops_of(crop_rows)
            # keys let the fixed-mask ablation give each image its own mask for the whole run
            mask = self.masks.sample(b, h, w, step=step, generator=self.rng, keys=keys, **extra)  # (B,1,H,W), 1 = hole
            out.append((image, mask))
        return out

    def _snapshot(self) -> dict[str, Any]:
        return {
            **self.stream.state(),
            "mask_rng": json.dumps(self.rng.bit_generator.state),
        }  # 128-bit ints kept as text

    def _submit(self, step: int) -> None:
        snapshot = self._snapshot()
        images = [self.stream.next() for _ in range(self.micro_batches)]
        self._pending = (step, snapshot, self._pool.submit(self._draw, images, step))

    def take(self, step: int, *, prefetch: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (image, mask) micro-batches of ``step``; starts preparing ``step + 1``."""
        if self._pending is None or self._pending[0] != step:
            self._submit(step)
        assert self._pending is not None
        micro = self._pending[2].result()
        self._pending = None
        if prefetch:
            self._submit(step + 1)
        return micro

    def state(self) -> dict[str, Any]:
        """Data position (epoch, position) and mask generator state of the next step not yet taken."""
        if self._pending is not None:
            self._pending[2].result()  # the generator must not move while it is read
            return dict(self._pending[1])
        return self._snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        """Set the mask generator from :meth:`state` (the stream is opened at its position by the caller)."""
        self.rng.bit_generator.state = json.loads(state["mask_rng"])

    def close(self) -> None:
        if self._pending is not None:
            self._pending[2].cancel()
            self._pending = None
        self._pool.shutdown(wait=True)


def crops_of(rows: torch.Tensor) -> list[Crop]:
    """The loader's (B, 7) ``crop`` rows as :class:`~inpnet.data.loader.Crop` records."""
    from inpnet.data.loader import Crop

    if rows.ndim != 2 or rows.shape[1] != len(Crop._fields):
        raise DataError(
            f"crop rows must be (B, {len(Crop._fields)}) ({', '.join(Crop._fields)}), got {tuple(rows.shape)}"
        )
    out = []
    for top, left, height, width, source_height, source_width, flipped in rows.tolist():
        out.append(Crop(top, left, height, width, source_height, source_width, bool(flipped)))
    return out


def sample_grid(
    image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor, *, max_images: int = 4
) -> np.ndarray:
    """Rows: masked input (holes grey), composite output, target. Returns (H, W, 3) uint8."""
    from torchvision.utils import make_grid

    n = min(max_images, image.shape[0])
    image, mask, prediction = image[:n].float().cpu(), mask[:n].float().cpu(), prediction[:n].float().cpu()
    rows = torch.cat([masked_input(image, mask, fill=0.5), composite(image, mask, prediction.clamp(0, 1)), image])
    grid: torch.Tensor = make_grid(rows, nrow=n, padding=2, pad_value=1.0)  # (3, H', W'); torchvision is untyped
    return (grid.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
