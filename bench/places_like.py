"""A Places-like tar for the benchmarks: 512 px shortest-side JPEGs (~75 KB) from real photos."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np


def build_tar(root: Path, members: int, seed: int = 0) -> tuple[Path, Path]:
    """Places-like tar: 512 px shortest side JPEGs (~75 KB) under data_large/<l>/<cat>/."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(f()).convert("RGB") for f in (data.astronaut, data.coffee, data.chelsea, data.rocket)]
    variants = []
    for i in range(48):  # distinct crops and scales, reused under many member names
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = photo.crop((x, y, x + cw, y + ch))
        s = 512 / min(cw, ch)
        crop = crop.resize((round(cw * s), round(ch * s)), Image.BICUBIC)
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        variants.append(buf.getvalue())
    tar_path, list_path = root / "bench.tar", root / "bench_list.txt"
    lines = []
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(members):
            rel = f"/c/category{i % 20:02d}/{i + 1:08d}.jpg"
            payload = variants[i % len(variants)]
            info = tarfile.TarInfo(f"data_large{rel}")
            info.size, info.mtime = len(payload), 1_600_000_000
            tar.addfile(info, io.BytesIO(payload))
            lines.append(f"{rel} {i % 20}")
    list_path.write_text("\n".join(lines) + "\n")
    return tar_path, list_path
