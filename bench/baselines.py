"""Benchmark: classical baselines' cost per image at 128 px, and the evaluation budget.

    uv run python bench/baselines.py [--size 128] [--images 6] [--workers 2]

Builds a 5-pattern x 4-ratio mask bank and a few photo crops from scikit-image's data, then
measures in one run:
- each baseline's CPU milliseconds per (image, mask) pair, serial, per pattern and overall,
  as a ratio to Telea (the peer), and its mean PSNR on those pairs (the speed/quality trade);
- the harmonic fill (InP-Net's ``prefill: harmonic``) batched 16 at a time, as it runs in
  training, against Telea on the same 16 pairs;
- ``BaselineInpainter`` wall time with N workers against 1 worker on the same batch (the
  speed-up; on a busy machine it shows the contention, not the method);
- the evaluator's own cost per pair besides the method (compositing, 8-bit quantisation,
  PSNR + SSIM), CPU milliseconds;
- the projected CPU time of the DVC quickstart's baseline stage (36 val images x 20 cells
  for the three baselines) and its wall time on 2 idle cores.
CPU time is reported rather than wall time because it does not depend on what else runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

QUICKSTART_PAIRS = 36 * 20


def photos(n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) crops of scikit-image's colour photographs."""
    from PIL import Image, ImageOps
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry()]
    out = []
    for i in range(n):
        img = Image.fromarray(sources[i % len(sources)])
        img = ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC, centering=((i * 0.37) % 1, (i * 0.61) % 1))
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def main() -> None:
    from inpnet.evaluate.baselines import BASELINES, BaselineInpainter
    from inpnet.evaluate.metrics import psnr, quantize, ssim
    from inpnet.images import read_mask_png
    from inpnet.masks import load_bank, write_bank
    from inpnet.models.composite import composite

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)

    images = photos(args.images, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        write_bank(
            Path(tmp),
            size=args.size,
            patterns=["random", "center", "corners", "edges", "free_form"],
            ratios=[0.1, 0.3, 0.5, 0.7],
            per_cell=1,
            seed=0,
        )
        bank = [(m.pattern, m.ratio, read_mask_png(m.path, size=args.size)) for m in load_bank(tmp)]
    pairs = [(i, p, r, hole) for i in range(len(images)) for p, r, hole in bank]
    print(f"{len(pairs)} pairs: {len(images)} images x {len(bank)} cells at {args.size} px")

    per_method: dict[str, float] = {}
    for name in BASELINES:
        method = BaselineInpainter(name)
        by_pattern: dict[str, list[float]] = {}
        scores = []
        for i, pattern, _, hole in pairs:
            mask = torch.from_numpy(hole)[None, None].float()  # (1, 1, S, S)
            t = time.process_time()
            out = method(images[i : i + 1], mask)
            by_pattern.setdefault(pattern, []).append(1000 * (time.process_time() - t))
            scores.append(float(psnr(quantize(out), images[i : i + 1]).mean()))
        per_method[name] = float(np.mean([v for vs in by_pattern.values() for v in vs]))
        cells = "  ".join(f"{p} {np.mean(v):6.1f}" for p, v in by_pattern.items())
        print(f"{name:14s} {per_method[name]:7.1f} CPU ms/pair  PSNR {np.mean(scores):5.2f} dB  ({cells})")
    for name in BASELINES:
        print(f"ratio {name}/telea: {per_method[name] / per_method['telea']:.1f}x")

    batch = images.repeat(2, 1, 1, 1)[:16]
    masks = torch.stack([torch.from_numpy(pairs[(k * 7) % len(pairs)][3])[None].float() for k in range(len(batch))])
    batched: dict[str, float] = {}
    for name in ("telea", "harmonic"):
        method = BaselineInpainter(name)
        t = time.process_time()
        for _ in range(3):
            method(batch, masks)
        batched[name] = 1000 * (time.process_time() - t) / (3 * len(batch))
    print(
        f"batch of {len(batch)}: harmonic {batched['harmonic']:.1f} CPU ms/pair, telea {batched['telea']:.1f}: "
        f"{batched['harmonic'] / batched['telea']:.2f}x telea"
    )
    for name in ("telea", "biharmonic"):
        serial = BaselineInpainter(name, workers=1)
        t = time.perf_counter()
        serial(batch, masks)
        one = time.perf_counter() - t
        with BaselineInpainter(name, workers=args.workers) as parallel:
            parallel(batch[:2], masks[:2])  # start the pool outside the timing
            t = time.perf_counter()
            parallel(batch, masks)
            many = time.perf_counter() - t
        print(f"{name}: {args.workers} workers vs 1 on a batch of {len(batch)}: {one / many:.2f}x faster (wall)")

    t = time.process_time()
    for _ in range(3):
        out = quantize(composite(batch, masks, torch.rand_like(batch)))
        psnr(out, batch), ssim(out, batch)
    overhead = 1000 * (time.process_time() - t) / (3 * len(batch))
    print(f"evaluator overhead (composite, quantise, PSNR, SSIM): {overhead:.1f} CPU ms/pair")

    total = QUICKSTART_PAIRS * (sum(per_method.values()) + len(per_method) * overhead) / 1000
    print(
        f"quickstart baselines ({QUICKSTART_PAIRS} pairs x {len(per_method)} methods): {total:.0f} CPU s, "
        f"about {total / 2:.0f} s wall on 2 idle cores"
    )


if __name__ == "__main__":
    main()
