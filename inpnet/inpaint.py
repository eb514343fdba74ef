"""Inference on arbitrary images: any size, known pixels unchanged bit for bit.

Every model family works on a fixed grid (its ``img_size``). :class:`Inpainter` wraps such a
model so that it accepts any (H, W): an image smaller than the grid is padded by reflection
(the padding counts as known context), a larger one is cut into overlapping grid-sized tiles
whose predictions are blended with a tent window, and the result is cropped back to (H, W).
Only tiles that contain a hole run through the model.

The file-level functions read 8-bit images and masks (255 = hole, binarised at 50%),
composite with :func:`inpnet.models.composite.composite` and write PNG, so every known
pixel of the output equals the input byte for byte.

Documented results for edge cases:

* a mask without holes returns the input unchanged;
* an all-hole mask is refused with :class:`MaskError` (there is no context to inpaint from);
* no mask at all (``mask=None``) is whole-image restoration at ratio 0, allowed for InP-Net
  only: the output is the model's prediction for every pixel.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inpnet.data.jpeg import BadImage, open_image
from inpnet.errors import DataError, MaskError, OutputError
from inpnet.evaluate.sources import IMAGE_EXTENSIONS
from inpnet.models.composite import check_image_mask, composite
from inpnet.outputs import FolderLock, write_atomic, writing_output

__all__ = [
    "IMAGE_SUFFIXES",
    "Inpainter",
    "decode_image",
    "decode_mask",
    "encode_png",
    "inpaint_array",
    "inpaint_files",
    "inpaint_folder",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # what folder mode picks up, same as the evaluator
RESTORING_FAMILIES = ("inpnet",)


class Inpainter(nn.Module):
    """A fixed-grid model made to accept any image size by reflection padding and tiling.

    Args:
        model: ``forward(image (B,3,g,g), mask (B,1,g,g)) -> prediction (B,3,g,g)``.
        grid: the model's input size ``g`` (its ``img_size``).
        family: the model family; only InP-Net restores whole images (empty masks).
        overlap: pixels shared by neighbouring tiles; default ``grid // 4``.
        tile_batch: tiles per forward call.
    """

    def __init__(self, model: nn.Module, *, grid: int, family: str, overlap: int | None = None, tile_batch: int = 16):
        super().__init__()
        self.model = model
        self.grid = int(grid)
        self.family = family
        self.overlap = self.grid // 4 if overlap is None else int(overlap)
        if not 0 <= self.overlap < self.grid:
            raise ValueError(f"overlap must lie in [0, {self.grid}), got {self.overlap}")
        self.tile_batch = tile_batch

    @property
    def restores(self) -> bool:
        """Whether the family supports whole-image restoration (mask omitted, ratio 0)."""
        return self.family in RESTORING_FAMILIES

    @torch.no_grad()
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Prediction (B, 3, H, W) in [0, 1] for any H, W (not composited).

        Where no tile ran (no hole nearby) the prediction is the input itself. An empty mask
        over the whole batch means restoration: every tile runs.
        """
        check_image_mask(image, mask)
        _, _, height, width = image.shape
        g = self.grid
        pad_h, pad_w = max(0, g - height), max(0, g - width)
        if pad_h or pad_w:
            # reflect needs pad < size; replicate covers images thinner than the padding
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            image_p = nn.functional.pad(image, (0, pad_w, 0, pad_h), mode=mode)
            mask_p = nn.functional.pad(mask, (0, pad_w, 0, pad_h), value=0.0)
        else:
            image_p, mask_p = image, mask
        restore = not bool((mask_p > 0.5).any())
        ph, pw = image_p.shape[-2:]
        positions = [
            (y, x)
            for y in _starts(ph, g, self.overlap)
            for x in _starts(pw, g, self.overlap)
            if restore or bool((mask_p[:, :, y : y + g, x : x + g] > 0.5).any())
        ]
        acc = torch.zeros_like(image_p, dtype=torch.float32)
        weight = torch.zeros_like(mask_p, dtype=torch.float32)
        window = _tent(g, self.overlap, image.device)  # (1, 1, g, g)
        dtype = next(self.model.parameters()).dtype
        for i in range(0, len(positions), self.tile_batch):
            chunk = positions[i : i + self.tile_batch]
            # tiles of every batch item stacked: (len(chunk) * B, C, g, g)
            img_t = torch.cat([image_p[:, :, y : y + g, x : x + g] for y, x in chunk])
            msk_t = torch.cat([mask_p[:, :, y : y + g, x : x + g] for y, x in chunk])
            pred = self.model(img_t.to(dtype), msk_t.to(dtype)).float().clamp(0, 1)
            for (y, x), tile in zip(chunk, pred.split(image.shape[0]), strict=True):
                acc[:, :, y : y + g, x : x + g] += tile * window
                weight[:, :, y : y + g, x : x + g] += window
        ran = weight > 0
        blended = torch.where(ran, acc / weight.clamp_min(1e-8), image_p.float())
        return blended[:, :, :height, :width].to(image.dtype)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis covering ``length`` (>= tile) with at least ``overlap`` shared."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _tent(size: int, overlap: int, device: torch.device) -> torch.Tensor:
    """(1, 1, size, size) blending window: ramps up over ``overlap`` pixels at each border."""
    if overlap == 0:
        return torch.ones(1, 1, size, size, device=device)
    idx = torch.arange(size, device=device, dtype=torch.float32)
    ramp = torch.minimum(idx + 1, size - idx).clamp(max=overlap + 1) / (overlap + 1)
    return (ramp[:, None] * ramp[None, :])[None, None]


# ---------------------------------------------------------------------------- arrays


def inpaint_array(
    inpainter: Inpainter,
    image: np.ndarray,
    mask: np.ndarray | None,
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Inpaint one 8-bit image.

    Args:
        inpainter: the wrapped model (already on ``device``).
        image: (H, W, 3) uint8.
        mask: (H, W) bool, True = hole; ``None`` = whole-image restoration (InP-Net only).

    Returns:
        (H, W, 3) uint8; known pixels equal ``image`` exactly.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"image must be an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if mask is None:
        if not inpainter.restores:
            raise MaskError(
                f"a mask is required for the {inpainter.family!r} family; "
                f"only {', '.join(RESTORING_FAMILIES)} restores whole images without one"
            )
        hole = np.zeros((height, width), dtype=bool)
    else:
        if mask.shape != (height, width):
            raise MaskError(f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the image is {width}x{height}; they must match")
        hole = mask.astype(bool)
        if hole.all():
            raise MaskError("the mask marks every pixel as a hole; there are no known pixels to inpaint from")
        if not hole.any():
            return image.copy()
    x = torch.from_numpy(image.copy()).to(device).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
    m = torch.from_numpy(hole).to(device)[None, None].float()  # (1, 1, H, W)
    pred = inpainter(x, m)
    out = pred if mask is None else composite(x, m, pred)
    # known pixels are k/255 in float32; *255 and rounding gives k back exactly
    return (out[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


# ----------------------------------------------------------------------------- files


def decode_image(data: bytes, *, source: str) -> np.ndarray:
    """(H, W, 3) uint8 from encoded image bytes; :class:`DataError` naming ``source`` if corrupt
    or over :data:`~inpnet.data.jpeg.DEFAULT_MAX_PIXELS` (checked before decoding)."""
    from PIL import UnidentifiedImageError

    try:
        with open_image(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except BadImage as err:
        raise DataError(f"{source}: image is {err}; pass a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{source}: not a readable image ({err}); pass a PNG or JPEG file") from None


def decode_mask(data: bytes, *, source: str, invert: bool = False) -> np.ndarray:
    """(H, W) bool, True = hole, from an 8-bit mask image (255 = hole, or 0 = hole if ``invert``)."""
    from PIL import UnidentifiedImageError

    try:
        with open_image(io.BytesIO(data)) as img:
            img.load()
            gray = np.asarray(img.convert("L"), dtype=np.uint8)
    except BadImage as err:
        raise MaskError(f"{source}: mask is {err}; pass a smaller mask") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise MaskError(f"{source}: not a readable mask image ({err}); pass an 8-bit PNG, 255 = hole") from None
    hole = gray >= 128
    return ~hole if invert else hole


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path.read_bytes()


def inpaint_files(
    inpainter: Inpainter,
    image: Path,
    mask: Path | None,
    out: Path,
    *,
    invert_mask: bool = False,
    device: str | torch.device = "cpu",
) -> Path:
    """Inpaint ``image`` with ``mask`` into the PNG file ``out`` (written only on success).

    Raises:
        OutputError: ``out`` is a folder or cannot be written (checked before inference).
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DataError(f"{out}: output must be a .png file (a lossy format would change known pixels)")
    if out.is_dir():
        raise OutputError(f"{out}: a folder of that name exists; pass the path of a .png file (or an image folder for folder mode)")
    with writing_output(out, "cannot create the folder for the output"):
        out.parent.mkdir(parents=True, exist_ok=True)
    arr = decode_image(_read(Path(image)), source=str(image))
    hole = None if mask is None else decode_mask(_read(Path(mask)), source=str(mask), invert=invert_mask)
    result = inpaint_array(inpainter, arr, hole, device=device)
    write_atomic(out, encode_png(result))
    return out


def inpaint_folder(
    inpainter: Inpainter,
    images: Path,
    masks: Path | None,
    out: Path,
    *,
    invert_mask: bool = False,
    device: str | torch.device = "cpu",
) -> list[Path]:
    """Inpaint every image in ``images`` with the mask of the same stem in ``masks``.

    All outputs are made in a temporary folder inside ``out`` and moved in at the end, so a
    bad file anywhere leaves ``out`` as it was.
    """
    images, out = Path(images), Path(out)
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []
    if not files:
        raise DataError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    pairs: list[tuple[Path, Path | None]] = []
    if masks is not None:
        if not Path(masks).is_dir():
            raise DataError(f"{masks}: mask folder not found (folder mode pairs images and masks by file stem)")
        by_stem = {p.stem: p for p in Path(masks).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        missing = [p.name for p in files if p.stem not in by_stem]
        if missing:
            raise DataError(f"{masks}: no mask with the stem of {missing[:5]} ({len(missing)} missing)")
        pairs = [(p, by_stem[p.stem]) for p in files]
    else:
        pairs = [(p, None) for p in files]
    with FolderLock(out):
        with writing_output(out):
            out.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".inpnet-", dir=out))
        try:
            for img, msk in pairs:
                inpaint_files(inpainter, img, msk, staging / f"{img.stem}.png", invert_mask=invert_mask, device=device)
            written = []
            with writing_output(out):
                for img, _ in pairs:
                    os.replace(staging / f"{img.stem}.png", out / f"{img.stem}.png")
                    written.append(out / f"{img.stem}.png")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("inpainted %d images into %s", len(written), out)
    return written
