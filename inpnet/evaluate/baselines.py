"""Classical inpainting baselines: a flat fill, a harmonic fill, OpenCV Telea and Navier-Stokes,
scikit-image biharmonic.

These are the methods a user would reach for without a trained model, so every comparison
report carries them as reference rows. Each one fills the hole pixels only: the result keeps
the known pixels of the input bit for bit, like a model's output after
:func:`inpnet.models.composite.composite`.

OpenCV works on 8-bit images, so Telea and Navier-Stokes see the input quantised to 8 bits
(the evaluator quantises every output to 8 bits anyway). Biharmonic solves a sparse linear
system per hole region in float64; at 128 px it costs about 0.05 to 0.45 s an image on
one core (more for large centred holes), which is why :class:`BaselineInpainter` spreads a
batch over worker processes.

The harmonic fill (:func:`inpnet.models.prefill.harmonic`, the pre-fill of the
``inpnet_s_harmonic`` variant, so the report shows what the network adds to it) is batched
torch and runs in this process, a whole batch at once.

This module imports neither torch nor the rest of inpnet at import time: worker processes
started with ``spawn`` import it and only need NumPy, OpenCV and scikit-image.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["BASELINES", "BaselineInpainter", "inpaint_array"]

log = logging.getLogger(__name__)

# "flat": every hole pixel the mean colour of the image's known pixels; the floor any
# method that looks at the image must clear (the compare report flags models below it)
BASELINES = ("flat", "harmonic", "telea", "navier_stokes", "biharmonic")


def inpaint_array(name: str, image: np.ndarray, hole: np.ndarray, *, radius: int = 3) -> np.ndarray:
    """Inpaint one image with a classical method.

    Args:
        name: one of :data:`BASELINES`.
        image: (H, W, 3) float in [0, 1].
        hole: (H, W) bool, True = missing.
        radius: neighbourhood radius in pixels for the OpenCV methods.

    Returns:
        (H, W, 3) float32 in [0, 1]; known pixels equal ``image`` exactly.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    if image.ndim != 3 or image.shape[2] != 3 or hole.shape != image.shape[:2]:
        raise ValueError(f"image must be (H, W, 3) and hole (H, W); got {image.shape} and {hole.shape}")
    image = np.asarray(image, dtype=np.float32)
    hole = np.asarray(hole, dtype=bool)
    if not hole.any():
        return image.copy()
    if hole.all():
        # nothing to propagate from: a flat mid-grey is the honest answer
        filled = np.full_like(image, 0.5)
    elif name == "flat":
        filled = np.broadcast_to(image[~hole].mean(axis=0), image.shape)  # (3,) -> (H, W, 3)
    elif name == "harmonic":
        import torch

        from inpnet.models.prefill import harmonic

        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]  # (1, 3, H, W)
        known = torch.from_numpy(~hole)[None, None].float()
        filled = harmonic(x, known)[0].permute(1, 2, 0).numpy()
    elif name == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        filled = inpaint_biharmonic(image.astype(np.float64), hole, channel_axis=-1)
    else:
        import cv2

        flag = cv2.INPAINT_TELEA if name == "telea" else cv2.INPAINT_NS
        u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        filled = cv2.inpaint(u8, hole.astype(np.uint8) * 255, float(radius), flag).astype(np.float32) / 255.0
    filled = np.clip(filled, 0.0, 1.0).astype(np.float32)
    return np.where(hole[..., None], filled, image)


def _inpaint_job(args: tuple[str, np.ndarray, np.ndarray, int]) -> np.ndarray:
    name, image, hole, radius = args
    return inpaint_array(name, image, hole, radius=radius)


class BaselineInpainter:
    """A classical method as an evaluator ``Method``: ``(image, mask) -> prediction``.

    Args:
        name: ``telea``, ``navier_stokes`` or ``biharmonic``.
        radius: OpenCV neighbourhood radius in pixels (ignored by biharmonic).
        workers: images of a batch inpainted concurrently. OpenCV releases the GIL, so
            threads suffice; biharmonic spends its time in Python and SciPy, so it gets
            ``spawn`` worker processes (created on first use, closed by :meth:`close`).
    """

    image_size: int | None = None  # any size works

    def __init__(self, name: str, *, radius: int = 3, workers: int = 1) -> None:
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
        self.name = name
        self.radius = int(radius)
        self.workers = max(1, int(workers))
        self._pool: Executor | None = None

    def settings(self) -> dict[str, object]:
        """What the report records about this method."""
        out: dict[str, object] = {"kind": "baseline", "workers": self.workers}
        if self.name in ("telea", "navier_stokes"):
            out["radius"] = self.radius
        return out

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inpaint a batch: image (B, 3, H, W) in [0, 1], mask (B, 1, H, W) 1 = hole."""
        import torch

        from inpnet.models.composite import check_image_mask

        check_image_mask(image, mask)
        if self.name == "harmonic":  # batched torch, in this process; it never reads hole pixels
            from inpnet.models.prefill import prefill

            return prefill("harmonic", image, (mask > 0.5).to(image.dtype))
        images = image.detach().float().cpu().permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
        holes = (mask.detach().cpu()[:, 0] > 0.5).numpy()  # (B, H, W)
        jobs = [(self.name, images[i], holes[i], self.radius) for i in range(len(images))]
        if self.workers > 1 and len(jobs) > 1:
            outs = list(self._executor().map(_inpaint_job, jobs))
        else:
            outs = [_inpaint_job(job) for job in jobs]
        out = torch.from_numpy(np.stack(outs)).permute(0, 3, 1, 2)  # (B, 3, H, W)
        return out.to(device=image.device, dtype=image.dtype)

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.name == "biharmonic":
                ctx = multiprocessing.get_context("spawn")  # fork after torch threads can deadlock
                self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
            else:
                self._pool = ThreadPoolExecutor(self.workers)
            log.debug("%s: %d %s workers", self.name, self.workers, type(self._pool).__name__)
        return self._pool

    def close(self) -> None:
        """Shut the worker pool down (a later call starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> BaselineInpainter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BaselineInpainter({self.name!r}, radius={self.radius}, workers={self.workers})"
