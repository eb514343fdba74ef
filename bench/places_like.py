"""Places-like tars for the benchmarks: Places365-layout members whose JPEGs are crops of real photos.

:func:`build_tar` makes the ~75 KB, 512 px shortest-side members ``bench/shard.py`` times;
:func:`photo_variants`, :func:`write_tar` and :func:`prefix_tar` let ``bench/scale.py`` make
multi-GB tars of larger JPEGs and cut a smaller tar from the front of one. A few dozen distinct
encodes are reused under many member names: the sharder checks every member's JPEG structure
and copies its bytes, so a repeat costs it what a distinct file would.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MTIME = 1_600_000_000
CATEGORIES = 20
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # skimage.data colour photographs, no download


def photo_variants(
    count: int = 48, *, seed: int = 0, sides: tuple[int, int] = (512, 512), qualities: tuple[int, int] = (90, 90)
) -> list[bytes]:
    """``count`` JPEGs: crops (60-100% of each side) of the :data:`PHOTOS` of scikit-image,
    resized to a shortest side drawn from ``sides`` and encoded at a quality drawn from
    ``qualities`` (both inclusive ranges)."""
    from PIL import Image
    from skimage import data

    if not (16 <= sides[0] <= sides[1] and 1 <= qualities[0] <= qualities[1] <= 100):
        raise ValueError(f"sides {sides} must be 16 <= lo <= hi, qualities {qualities} 1 <= lo <= hi <= 100")
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS]
    variants = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        side, quality = int(rng.integers(sides[0], sides[1] + 1)), int(rng.integers(qualities[0], qualities[1] + 1))
        s = side / min(cw, ch)
        crop = photo.crop((x, y, x + cw, y + ch)).resize((round(cw * s), round(ch * s)), Image.BICUBIC)
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=quality)
        variants.append(buf.getvalue())
    return variants


def write_tar(
    tar_path: Path, list_path: Path, variants: Sequence[bytes], members: int, *, min_bytes: int = 0
) -> list[int]:
    """A ustar tar of ``data_large/c/categoryNN/NNNNNNNN.jpg`` members cycling through ``variants``
    and its train file list (``/c/categoryNN/NNNNNNNN.jpg <label>``), as in Places365's
    train_large tar. Writes at least ``members`` members and at least ``min_bytes`` bytes;
    returns the byte offset where each member's data (with its padding) ends. Fsynced, so a
    later timing does not pay for this write-back."""
    from inpnet.data.tarwriter import BLOCK, ustar_header

    ends: list[int] = []
    offset = 0
    with open(tar_path, "wb", buffering=4 << 20) as tar, open(list_path, "w", encoding="utf-8") as lines:
        while len(ends) < members or offset < min_bytes:
            i = len(ends)
            rel = f"/c/category{i % CATEGORIES:02d}/{i + 1:08d}.jpg"
            payload = variants[i % len(variants)]
            pad = -len(payload) % BLOCK
            tar.write(ustar_header(f"data_large{rel}", len(payload), MTIME))
            tar.write(payload)
            tar.write(b"\0" * pad)
            offset += BLOCK + len(payload) + pad
            ends.append(offset)
            lines.write(f"{rel} {i % CATEGORIES}\n")
        tar.write(b"\0" * (2 * BLOCK))
        tar.flush()
        os.fsync(tar.fileno())
    return ends


def prefix_tar(src: Path, src_list: Path, dst: Path, dst_list: Path, end: int, members: int) -> None:
    """The first ``members`` members of tar ``src`` (whose data ends at byte ``end``) as tar
    ``dst``, with the first ``members`` lines of ``src_list`` as its file list."""
    with open(src, "rb") as source, open(dst, "wb") as out:
        copied = 0
        while copied < end:
            step = os.copy_file_range(source.fileno(), out.fileno(), end - copied)
            if step == 0:
                raise ValueError(f"{src}: ends at byte {copied}, before the prefix's end at byte {end}")
            copied += step
        out.write(b"\0" * 1024)  # the two zero blocks that end a tar
        out.flush()
        os.fsync(out.fileno())
    with open(src_list, encoding="utf-8") as lines:
        dst_list.write_text("".join(line for _, line in zip(range(members), lines, strict=False)), encoding="utf-8")


def build_tar(root: Path, members: int, seed: int = 0) -> tuple[Path, Path]:
    """Places-like tar: 512 px shortest side JPEGs (~75 KB) under data_large/<l>/<cat>/."""
    tar_path, list_path = root / "bench.tar", root / "bench_list.txt"
    write_tar(tar_path, list_path, photo_variants(48, seed=seed), members)
    return tar_path, list_path
