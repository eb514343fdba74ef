"""Benchmark: the training loader's images/s per worker against isolated decode-and-crop.

    uv run python bench/loader.py [--samples 600] [--workers 2]

Builds pass-through shards of 512 px JPEGs, then measures in one run:
- isolated decode + random resized crop to 256 on in-memory bytes, one core, for each
  decoder here: simplejpeg with DCT-scaled decode (what the loader uses), simplejpeg full
  decode, PIL (draft mode), torchvision.io.decode_jpeg;
- the full loader (``make_loader(train=True, image_size=256)``: tar reading, shuffle
  buffer, decode, crop, flip, collate, float conversion) with 0 workers (in process) and
  with N DataLoader workers, as images/s per worker.
Goal (issue 2): loader per worker >= 0.7x the fastest isolated decoder.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from places_like import build_tar

SIZE = 256


def isolated_rates(images: list[bytes], repeats: int) -> dict[str, tuple[float, float]]:
    """(images/s wall, images per CPU second) of decode + random resized crop to SIZE, per decoder."""
    import cv2
    import simplejpeg
    import torch
    import torchvision
    from PIL import Image

    from inpnet.data.loader import decode_crop, random_resized_box

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    boxes = []
    for data in images:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        boxes.append(random_resized_box(h, w, rng, (0.25, 1.0)))

    def crop_resize(pixels: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        top, left, h, w = box
        return cv2.resize(pixels[top : top + h, left : left + w], (SIZE, SIZE), interpolation=cv2.INTER_AREA)

    def pil(data: bytes, box: tuple[int, int, int, int]) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (im.width * SIZE // box[3], im.height * SIZE // box[2]))
            scale = im.width / simplejpeg.decode_jpeg_header(data)[1]
            top, left, h, w = (round(v * scale) for v in box)
            return np.asarray(
                im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR, box=(left, top, left + w, top + h))
            )

    def tv(data: bytes, box: tuple[int, int, int, int]) -> np.ndarray:
        pixels = (
            torchvision.io.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)).permute(1, 2, 0).numpy()
        )
        return crop_resize(pixels, box)

    decoders = {
        "simplejpeg, DCT-scaled (loader's path)": lambda d, b: decode_crop(d, b, SIZE, fast=True),
        "simplejpeg, full decode": lambda d, b: crop_resize(
            simplejpeg.decode_jpeg(d, fastdct=True, fastupsample=True), b
        ),
        "PIL, draft mode": pil,
        "torchvision.io.decode_jpeg": tv,
    }
    rates = {}
    for name, fn in decoders.items():
        fn(images[0], boxes[0])  # warm-up
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            for data, box in zip(images, boxes, strict=True):
                fn(data, box)
        count = repeats * len(images)
        rates[name] = (count / (time.perf_counter() - start), count / (time.process_time() - start_cpu))
    return rates


def _children_cpu() -> float:
    child = resource.getrusage(resource.RUSAGE_CHILDREN)  # DataLoader workers, once joined
    return child.ru_utime + child.ru_stime


def loader_rate(shards: Path, workers: int, batches: int) -> tuple[float, float, float]:
    """Images/s (wall), images per worker-CPU second, main-process CPU ms per image.

    Resampled, so it never runs dry. With workers, the CPU figures split the work between
    the workers (read, decode, crop, collate to uint8) and the main process (float
    conversion); in process, everything counts as the one worker's. Worker CPU covers
    every image handed over, start-up included (batches prefetched but not consumed make
    it slightly pessimistic).
    """
    import gc
    import itertools

    import torch

    from inpnet.data.loader import make_loader

    torch.set_num_threads(1)
    start_main, start_children = time.process_time(), _children_cpu()
    # fork: workers must be this process's children for RUSAGE_CHILDREN to count them
    loader = make_loader(
        shards,
        image_size=SIZE,
        batch_size=32,
        train=True,
        num_workers=workers,
        resampled=True,
        shuffle_buffer=64,
        start_method="fork",
    )
    stream = iter(loader)
    warm = sum(next(stream)["image"].shape[0] for _ in range(max(2, workers * 2)))  # start-up excluded from wall
    start = time.perf_counter()
    count = sum(batch["image"].shape[0] for batch in itertools.islice(stream, batches))
    wall = time.perf_counter() - start
    main_cpu = time.process_time() - start_main
    del stream, loader
    gc.collect()  # joins the workers so that their CPU time is counted
    total = count + warm
    if workers == 0:
        return count / wall, total / main_cpu, 0.0
    return count / wall, total / (_children_cpu() - start_children), 1e3 * main_cpu / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=600, help="JPEGs in the built shards")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the multi-worker figure")
    parser.add_argument("--batches", type=int, default=30, help="timed batches of 32 per loader run")
    args = parser.parse_args()

    from inpnet.config import ShardConfig
    from inpnet.data.shard import shard_tar

    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        tar, filelist = build_tar(work, args.samples)
        shard_tar(tar, filelist, "train", work / "train", ShardConfig(samples_per_shard=100, shard_multiple=4))
        images = []
        with open(tar, "rb") as handle:
            from inpnet.data.tarindex import index_tar

            for m in index_tar(tar)[:48]:
                handle.seek(m.offset)
                images.append(handle.read(m.size))
        print(
            f"{os.cpu_count()} CPUs; 512 px JPEGs ({np.mean([len(i) for i in images]) / 1e3:.0f} KB) -> random resized crop {SIZE}"
        )
        iso = isolated_rates(images, repeats=3)
        for name, (wall, cpu) in iso.items():
            print(f"  isolated {name:<40} {wall:7.0f} img/s wall, {cpu:7.0f} img per CPU-s (one core)")
        best_name, (best_wall, best_cpu) = max(iso.items(), key=lambda kv: kv[1][1])
        single, single_cpu, _ = loader_rate(work / "train", 0, args.batches)
        multi, multi_cpu, main_ms = loader_rate(work / "train", args.workers, args.batches)
        print(
            f"  loader, in process (1 worker)          {single:7.0f} img/s wall, {single_cpu:7.0f} img per CPU-s (everything)"
        )
        print(
            f"  loader, {args.workers} DataLoader workers           {multi:7.0f} img/s wall ({multi / args.workers:.0f} per worker), "
            f"{multi_cpu:7.0f} img per worker-CPU-s, main process {main_ms:.2f} CPU-ms per image (float conversion)"
        )
        print(f"fastest isolated: {best_name}")
        print(
            f"ratio loader / isolated: in process {single / best_wall:.2f} (wall), {single_cpu / best_cpu:.2f} (per CPU-s); "
            f"{args.workers} workers {multi / args.workers / best_wall:.2f} (wall, per worker), {multi_cpu / best_cpu:.2f} (per worker-CPU-s)"
            f"  [goal >= 0.7]"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
