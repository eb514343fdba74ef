"""Image and mask files: the extensions we read, decoding, PNG encoding, the hole ratio.

Everything that reads a user's photo or mask file goes through here, so every path gets the
same limits (:func:`inpnet.data.jpeg.open_image` refuses decompression bombs) and the same
clear errors: :class:`~inpnet.errors.DataError` for images, :class:`~inpnet.errors.MaskError`
for masks, each naming the file.

Masks are bool (H, W) arrays, True = hole; on disk an 8-bit grey PNG, 255 = hole.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inpnet.data.jpeg import BadImage, open_image
from inpnet.errors import DataError, MaskError

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "decode_image",
    "decode_mask",
    "encode_mask_png",
    "encode_png",
    "fit_square",
    "hole_ratio",
    "load_image",
    "read_mask_png",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # photos and mask files we pick up


def hole_ratio(mask: np.ndarray) -> float:
    """Fraction of hole pixels of a bool (H, W) mask."""
    return float(np.count_nonzero(mask)) / mask.size if mask.size else 0.0


def fit_square(img: Image.Image, size: int, resample: int) -> Image.Image:
    """Scale the shortest side to ``size`` and centre-crop to ``size`` x ``size``."""
    return ImageOps.fit(img, (size, size), method=resample, centering=(0.5, 0.5))


def load_image(path: Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read an image file as (3, size, size) float in [0, 1] and its original (width, height).

    Raises :class:`DataError` if the file cannot be decoded.
    """
    import torch

    try:
        with open_image(path) as raw:
            img = ImageOps.exif_transpose(raw).convert("RGB")  # convert() forces a full decode
    except BadImage as err:
        raise DataError(f"{path}: image is {err}; pass a smaller image") from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types for truncated or foreign files
        raise DataError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
    source_size = img.size
    arr = np.asarray(fit_square(img, size, Image.Resampling.BICUBIC), dtype=np.uint8)  # (S, S, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0), source_size


def read_mask_png(
    path: str | Path,
    size: int | tuple[int, int] | None = None,
    *,
    invert: bool = False,
    resize: bool = True,
) -> np.ndarray:
    """Read a mask file as a bool (H, W) array, True = hole.

    Values are binarised at 50% of the format's range (grey >= 128 for 8-bit, >= 32768 for
    16-bit; colour images are converted to luma, alpha is ignored), so anti-aliased or JPEG
    masks are accepted rather than refused. ``invert`` flips the result for sets where white
    means known. ``size`` (an int for square, or ``(height, width)``) resizes with nearest
    neighbour; with ``resize=False`` a size mismatch raises :class:`MaskError` instead.
    """
    path = Path(path)
    try:
        with open_image(path) as img:
            img.load()
            if img.mode.startswith("I"):
                hole = np.asarray(img) >= 32768
            elif img.mode == "F":
                hole = np.asarray(img) >= 0.5
            else:
                hole = np.asarray(img.convert("L")) >= 128
    except BadImage as err:
        raise MaskError(f"{path}: mask is {err}; pass a smaller mask") from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise MaskError(f"{path}: cannot read mask ({err}); expected an 8-bit PNG with 255 = hole") from None
    if hole.size == 0:
        raise MaskError(f"{path}: mask image is empty")
    if invert:
        hole = ~hole
    if size is None:
        return hole
    target = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if hole.shape == target:
        return hole
    if not resize:
        raise MaskError(f"{path}: mask is {hole.shape[0]}x{hole.shape[1]} (HxW), expected {target[0]}x{target[1]}")
    small = Image.fromarray(hole.astype(np.uint8) * 255).resize((target[1], target[0]), Image.Resampling.NEAREST)
    return np.asarray(small) >= 128


def encode_mask_png(mask: np.ndarray) -> bytes:
    """PNG bytes of a bool mask (255 = hole) with fixed encoder settings (reproducible bytes)."""
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


# ------------------------------------------------------------------------------ writer


def decode_image(data: bytes, *, source: str) -> np.ndarray:
    """(H, W, 3) uint8 from encoded image bytes; :class:`DataError` naming ``source`` if corrupt
    or over :data:`~inpnet.data.jpeg.DEFAULT_MAX_PIXELS` (checked before decoding)."""
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
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
