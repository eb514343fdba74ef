"""Benchmark: pass-through sharding against raw read and a plain copy, measured in one run.

    uv run python bench/shard.py                       # builds a ~230 MB Places-like tar
    uv run python bench/shard.py --tar data/raw/val_large.tar --filelist data/raw/filelist_places365-standard.tar --split val

Prints MB/s of the input tar for: ``cat`` to /dev/null (raw read), a plain copy (read +
write + fsync), webdataset's ShardWriter (one core, for reference), our pass-through
sharding with 1 and 2 workers (threads and processes), the ratios to both peers, the
``verify=decode`` rate, and images/s with ``--resize 256``. Goals (issue 2): >= 300 MB/s
per worker pass-through; >= 0.7x the plain copy with all workers. Every run reads a warm
page cache (the tar is read once first), so the figures compare CPU cost, not the disk.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
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


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as handle:
        os.fsync(handle.fileno())


def shardwriter_pass(tar: Path, filelist: Path, split: str, out: Path) -> None:
    """webdataset.ShardWriter fed the same members (header checks only): the library peer."""
    import webdataset as wds

    from inpnet.data.tarindex import index_tar, list_key, read_labels, sample_key

    labels, _ = read_labels(filelist, split)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(tar, os.O_RDONLY)
    with wds.ShardWriter(str(out / "wds-%06d.tar"), maxcount=1000, verbose=0) as sink:
        for m in index_tar(tar):
            if m.kind == "file" and list_key(m.name) in labels:
                sink.write({"__key__": sample_key(list_key(m.name)), "jpg": os.pread(fd, m.size, m.offset),
                            "cls": labels[list_key(m.name)]})
    os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tar", type=Path, help="an existing tar (default: build one)")
    parser.add_argument("--filelist", type=Path, help="its file list (tar or .txt)")
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--members", type=int, default=3000, help="members of the built tar")
    parser.add_argument("--workdir", type=Path, help="scratch folder on the disk to measure (default: a temp dir)")
    args = parser.parse_args()

    from inpnet.config import ShardConfig
    from inpnet.data.shard import shard_tar

    work = Path(tempfile.mkdtemp(prefix="bench-shard-", dir=args.workdir))
    try:
        tar, filelist = (args.tar, args.filelist) if args.tar else build_tar(work, args.members)
        size_mb = tar.stat().st_size / 1e6
        print(f"tar: {tar} ({size_mb:.0f} MB), {os.cpu_count()} CPUs, warm page cache")
        subprocess.run(["cat", str(tar)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        rates: dict[str, float] = {}
        rates["raw read (cat)"] = size_mb / timed(lambda: subprocess.run(["cat", str(tar)], stdout=subprocess.DEVNULL, check=True))
        rates["plain copy"] = size_mb / timed(lambda: plain_copy(tar, work / "copy.tar"))
        (work / "copy.tar").unlink()
        rates["webdataset ShardWriter, 1 core"] = size_mb / timed(lambda: shardwriter_pass(tar, filelist, args.split, work / "wds"))
        shutil.rmtree(work / "wds")

        def ours(name: str, **cfg) -> float:
            out = work / name
            config = ShardConfig(samples_per_shard=1000, shard_multiple=1, **cfg)
            seconds = timed(lambda: shard_tar(tar, filelist, args.split, out, config))
            shutil.rmtree(out)
            return seconds

        for workers, runner in ((1, "threads"), (2, "threads"), (2, "processes")):
            rates[f"ours pass-through, {workers} worker(s), {runner}"] = size_mb / ours(f"p{workers}{runner}", workers=workers, task_runner=runner)
        rates["ours verify=decode, 2 workers, processes"] = size_mb / ours("dec", workers=2, task_runner="processes", verify="decode")
        width = max(map(len, rates))
        for name, rate in rates.items():
            print(f"  {name:<{width}}  {rate:8.1f} MB/s")
        one, best = rates["ours pass-through, 1 worker(s), threads"], max(
            rates["ours pass-through, 2 worker(s), threads"], rates["ours pass-through, 2 worker(s), processes"])
        print(f"ratios: 1 worker / raw read {one / rates['raw read (cat)']:.2f}, 1 worker / plain copy {one / rates['plain copy']:.2f}, "
              f"2 workers / plain copy {best / rates['plain copy']:.2f}, 1 worker / ShardWriter {one / rates['webdataset ShardWriter, 1 core']:.2f}")
        print(f"goal: >= 300 MB/s per worker -> {'met' if one >= 300 else 'NOT met'} ({one:.0f}); "
              f">= 0.7x plain copy with all workers -> {'met' if best >= 0.7 * rates['plain copy'] else 'NOT met'}")
        n_images = sum(1 for _ in tarfile.open(tar)) if not args.tar else None
        seconds = ours("resize", workers=2, task_runner="processes", resize=256)
        print(f"--resize 256, 2 workers, processes: {size_mb / seconds:.1f} MB/s"
              + (f", {n_images / seconds:.0f} images/s" if n_images else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
