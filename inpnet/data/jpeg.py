"""JPEG checks, fast decoding and re-encoding, shared by the shard writer and the loader.

Why the default check is structural: libjpeg-turbo spends most of a decode in Huffman
decoding, which no scaled decode can skip. Measured here on 512 px photographs (76 KB):
full decode 530-790 img/s (40-60 MB/s), 1/8-scale decode 640-900 img/s (48-69 MB/s), so
any decode caps a worker at about a fifth of the 300 MB/s pass-through goal. The
structural check (:func:`check_jpeg`) walks every marker segment with its length, needs a
frame header with a non-zero size, a scan, and the end-of-image marker after the scan,
and scans the entropy-coded data with one C-speed regex for markers that cannot occur
there (in baseline data every 0xFF byte is followed by 0x00 or a restart marker). It runs
at about 1.2 GB/s and catches empty, non-JPEG, truncated (the most common damage, an
interrupted download or copy), header-corrupt and garbage-overwritten files. What it
cannot catch is a bit flip inside the Huffman data, which libjpeg itself only reports as
a warning; ``verify="decode"`` adds a strict 1/8-scale decode for that (about 60 MB/s per
worker), and ``--resize`` always decodes strictly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import PIL.Image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "BadImage",
    "JpegInfo",
    "check_jpeg",
    "decode_rgb",
    "open_image",
    "pixel_problem",
    "resize_shortest",
    "verify_decode",
]

# Images whose header claims more pixels are refused before decoding: a 634-byte JPEG can
# claim 60000x60000, which costs ~1 s and 0.7 GB to decode at 1/8 scale (10.8 GB in full).
# The shard stage takes its limit from ``data.shard.max_pixels`` (same default).
DEFAULT_MAX_PIXELS = 50_000_000


class BadImage(ValueError):
    """A member is not a usable JPEG; the message is the rejection reason."""


@dataclass(frozen=True, slots=True)
class JpegInfo:
    width: int
    height: int


# SOF0..SOF15 minus DHT (C4), JPG (C8) and DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Segments allowed between the scans of a progressive or multi-scan image.
_BETWEEN_SCANS = frozenset({0xC4, 0xCC, 0xDA, 0xDB, 0xDD, 0xFE, *range(0xE0, 0xF0)})
# A marker inside entropy-coded data: 0xFF followed by anything but a stuffed 0x00, a
# restart marker (D0-D7) or another fill 0xFF.
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def check_jpeg(data: bytes) -> JpegInfo:
    """Structural validation of a JPEG; returns its size or raises :class:`BadImage`."""
    n = len(data)
    if n == 0:
        raise BadImage("empty file")
    if data[:2] != b"\xff\xd8":
        raise BadImage(f"not a JPEG image (starts with {data[:8]!r})")
    pos, info = 2, None
    while True:  # header segments up to the first scan
        if pos + 4 > n:
            raise BadImage(f"truncated in the JPEG header at byte {pos} of {n}")
        if data[pos] != 0xFF:
            raise BadImage(f"corrupt JPEG header: no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            raise BadImage("JPEG ends before any image data")
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            raise BadImage(f"corrupt JPEG header: unexpected marker 0xFF{marker:02X} at byte {pos}")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2 or pos + 2 + length > n:
            raise BadImage(f"truncated JPEG segment 0xFF{marker:02X} at byte {pos} of {n}")
        if marker in _SOF:
            if length < 8:
                raise BadImage(f"corrupt JPEG frame header at byte {pos}")
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            if width == 0 or height == 0:
                raise BadImage(f"JPEG frame header gives size {width}x{height}")
            info = JpegInfo(width=width, height=height)
        pos += 2 + length
        if marker == 0xDA:
            break
    if info is None:
        raise BadImage("no JPEG frame header (SOF) before the image data")
    end = data.rfind(b"\xff\xd9", pos)
    if end < 0:
        raise BadImage(f"truncated JPEG: no end-of-image marker after the image data ({n} bytes)")
    if end == pos:
        raise BadImage("JPEG has an empty scan")
    _check_scans(data, pos, end)
    return info


def _check_scans(data: bytes, pos: int, end: int) -> None:
    """Only restart markers and whole between-scan segments may interrupt the scan data."""
    while (found := _MARKER_IN_SCAN.search(data, pos, end)) is not None:
        at = found.start()
        marker = data[at + 1]
        if marker not in _BETWEEN_SCANS:
            raise BadImage(f"corrupt JPEG data: unexpected marker 0xFF{marker:02X} at byte {at}")
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if length < 2 or at + 2 + length > end:
            raise BadImage(f"corrupt JPEG data: bad segment 0xFF{marker:02X} at byte {at}")
        pos = at + 2 + length


def pixel_problem(width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why an image of ``width`` x ``height`` is refused before decoding, else None."""
    if width * height <= max_pixels:
        return None
    return f"{width}x{height} ({width * height / 1e6:.1f} megapixels), over the limit of {max_pixels / 1e6:.1f}"


def open_image(fp: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> PIL.Image.Image:
    """``PIL.Image.open`` (any format) that refuses an image whose header claims more than
    ``max_pixels``, before decoding: :class:`BadImage` says ``"<w>x<h> (...), over the limit of ..."``."""
    from PIL import Image

    try:
        image = Image.open(fp)
    except Image.DecompressionBombError as err:  # PIL's own, higher limit, checked while opening
        raise BadImage(f"over the limit of {max_pixels / 1e6:.1f} megapixels ({err})") from None
    if (problem := pixel_problem(*image.size, max_pixels)) is not None:
        image.close()
        raise BadImage(problem)
    return image


def decode_rgb(
    data: bytes,
    *,
    min_height: int = 0,
    min_width: int = 0,
    fast: bool = False,
    strict: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode to uint8 RGB (H, W, 3), at the smallest DCT scale that keeps ``min_*`` pixels.

    libjpeg-turbo scales by 1/8..8/8 during the inverse DCT, so a downscaled decode skips
    most of the pixel work. CMYK and other colour spaces libjpeg cannot turn into RGB fall
    back to PIL. ``strict`` turns libjpeg's corrupt-data warnings into errors. An image
    whose header claims more than ``max_pixels`` raises :class:`BadImage` before any decoding.
    """
    import simplejpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        pass  # not a JPEG libjpeg can read; the decode below says why
    else:
        if (problem := pixel_problem(width, height, max_pixels)) is not None:
            raise BadImage(f"JPEG is {problem}")
    try:
        rgb: np.ndarray = simplejpeg.decode_jpeg(  # simplejpeg is untyped
            data,
            colorspace="rgb",
            fastdct=fast,
            fastupsample=fast,
            min_height=min_height,
            min_width=min_width,
            strict=strict,
        )
        return rgb
    except ValueError as err:
        if "colorspace" not in str(err).lower() and "color space" not in str(err).lower():
            raise
    return _decode_with_pil(data, min_height, min_width, max_pixels)


def _decode_with_pil(data: bytes, min_height: int, min_width: int, max_pixels: int) -> np.ndarray:
    import io

    try:
        image = open_image(io.BytesIO(data), max_pixels)
    except BadImage as err:
        raise BadImage(f"JPEG is {err}") from None
    with image:
        if min_height and min_width:
            image.draft("RGB", (min_width, min_height))
        return np.asarray(image.convert("RGB"))


def verify_decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Strict 1/8-scale decode; raises :class:`BadImage` on any libjpeg error or warning."""
    try:
        decode_rgb(data, min_height=1, min_width=1, fast=True, strict=True, max_pixels=max_pixels)
    except BadImage:
        raise
    except (ValueError, OSError) as err:
        raise BadImage(f"JPEG does not decode: {err}") from None


def resize_shortest(
    data: bytes, side: int, quality: int, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, JpegInfo]:
    """Re-encode with shortest side ``side`` (never upscaled: smaller images keep their bytes)."""
    import cv2
    import simplejpeg

    info = check_jpeg(data)
    shortest = min(info.width, info.height)
    try:
        if shortest <= side:
            decode_rgb(data, min_height=1, min_width=1, fast=True, strict=True, max_pixels=max_pixels)
            return data, info
        scale = side / shortest
        width, height = max(1, round(info.width * scale)), max(1, round(info.height * scale))
        pixels = decode_rgb(data, min_height=height, min_width=width, strict=True, max_pixels=max_pixels)
    except BadImage:
        raise
    except (ValueError, OSError) as err:
        raise BadImage(f"JPEG does not decode: {err}") from None
    pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    encoded = simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=quality, colorspace="RGB")
    return encoded, JpegInfo(width=width, height=height)


def scaled_request(height: int, width: int, crop_h: float, crop_w: float, out: int) -> tuple[int, int]:
    """Decode size (h, w) at which a ``crop_h x crop_w`` crop still has ``out`` pixels.

    Only the 1/8, 1/4 and 1/2 scales are requested: libjpeg-turbo has SIMD inverse DCTs
    for those, while the others (3/8, 5/8, 7/8, ...) run generic C code that is slower than
    a full-size decode (measured: 7/8 scale 1.9 ms, full 0.9 ms, 1/2 0.8 ms on 512x683).
    """
    need = max(out / crop_h, out / crop_w)
    for factor in (0.125, 0.25, 0.5):
        if factor >= need:
            return math.ceil(height * factor), math.ceil(width * factor)
    return height, width
