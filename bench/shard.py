"""Benchmark: pass-through sharding against raw read and a plain copy, measured in one run.

    uv run python bench/shard.py                       # builds a ~230 MB Places-like tar
    uv run python bench/shard.py --tar data/raw/val_large.tar --filelist data/raw/filelist_places365-standard.tar --split val

Prints MB/s of the input tar for: ``cat`` to /dev/null (raw read), a plain copy (read +
write + fsync), webdataset's ShardWriter (one core, for reference), our pass-through
sharding with 1 and 2 workers (threads and processes), the ratios to both peers, the
``verify=decode`` rate, and images/s with ``--resize 256``. Goals (issue 2): >= 300 MB/s
per worker pass-through; >= 0.7x the plain copy with all workers. Every run reads a warm
page cache (the tar is read once first), so the figures compare CPU cost, not the disk.
Each row also gives MB per CPU second (this process, its threads and joined children):
on a shared or loaded machine that is the per-worker rate a dedicated core would give.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from places_like import build_tar


def timed(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process, its threads and reaped child processes)."""

    def cpu() -> float:
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + child.ru_utime + child.ru_stime

    start, start_cpu = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - start, cpu() - start_cpu


def plain_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as handle:
        os.fsync(handle.fileno())


def shardwriter_pass(tar: Path, filelist: Path, split: str, out: Path) -> None:
    """webdataset.ShardWriter fed the same members (header checks only): the library peer."""
    import webdataset as wds

    from inpnet.data.tarindex import index_tar, list_key, read_labels, sample_key

    members = index_tar(tar)
    labels = read_labels(filelist, split, members)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(tar, os.O_RDONLY)
    with wds.ShardWriter(str(out / "wds-%06d.tar"), maxcount=1000, verbose=0) as sink:
        for m in members:
            if m.kind == "file" and labels.label[m.ordinal] >= 0 and not labels.full[m.ordinal]:  # by its list_key
                sink.write(
                    {
                        "__key__": sample_key(list_key(m.name)),
                        "jpg": os.pread(fd, m.size, m.offset),
                        "cls": int(labels.label[m.ordinal]),
                    }
                )
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
        rows: dict[str, tuple[float, float]] = {}  # name -> (wall MB/s, MB per CPU second)

        def record(name: str, seconds: tuple[float, float]) -> None:
            rows[name] = (size_mb / seconds[0], size_mb / max(seconds[1], 1e-9))

        record(
            "raw read (cat)", timed(lambda: subprocess.run(["cat", str(tar)], stdout=subprocess.DEVNULL, check=True))
        )
        record("plain copy (read + write + fsync)", timed(lambda: plain_copy(tar, work / "copy.tar")))
        (work / "copy.tar").unlink()
        record(
            "webdataset ShardWriter, 1 core", timed(lambda: shardwriter_pass(tar, filelist, args.split, work / "wds"))
        )
        shutil.rmtree(work / "wds")

        def ours(name: str, **cfg) -> tuple[float, float]:
            out = work / name
            config = ShardConfig(samples_per_shard=250, shard_multiple=4, **cfg)  # 12 shards: both workers stay busy
            seconds = timed(lambda: shard_tar(tar, filelist, args.split, out, config))
            shutil.rmtree(out)
            return seconds

        for workers, runner in ((1, "threads"), (2, "threads"), (2, "processes")):
            record(
                f"ours pass-through, {workers} worker(s), {runner}",
                ours(f"p{workers}{runner}", workers=workers, task_runner=runner),
            )
        record(
            "ours verify=decode, 2 workers, processes", ours("dec", workers=2, task_runner="processes", verify="decode")
        )
        width = max(map(len, rows))
        print(f"  {'':<{width}}  {'wall MB/s':>10}  {'MB/CPU-s':>9}")
        for name, (wall, per_cpu) in rows.items():
            print(f"  {name:<{width}}  {wall:10.1f}  {per_cpu:9.1f}")
        one = rows["ours pass-through, 1 worker(s), threads"]
        copy, raw, wds_rate = (
            rows["plain copy (read + write + fsync)"],
            rows["raw read (cat)"],
            rows["webdataset ShardWriter, 1 core"],
        )
        best = max(
            rows["ours pass-through, 2 worker(s), threads"][0], rows["ours pass-through, 2 worker(s), processes"][0]
        )
        print(
            f"ratios (wall): 1 worker / raw read {one[0] / raw[0]:.2f}, 1 worker / plain copy {one[0] / copy[0]:.2f}, "
            f"2 workers / plain copy {best / copy[0]:.2f}, 1 worker / ShardWriter {one[0] / wds_rate[0]:.2f}"
        )
        print(
            f"ratios (per CPU second): 1 worker / plain copy {one[1] / copy[1]:.2f}, 1 worker / ShardWriter {one[1] / wds_rate[1]:.2f}"
        )
        print(
            f"goal >= 300 MB/s per worker: wall {one[0]:.0f}, per CPU second {one[1]:.0f}; "
            f"goal >= 0.7x plain copy with all workers: {best / copy[0]:.2f}x"
        )
        n_images = None
        if not args.tar:
            with tarfile.open(tar) as members:
                n_images = sum(1 for _ in members)
        wall, cpu = ours("resize", workers=2, task_runner="processes", resize=256)
        extra = f", {n_images / wall:.0f} images/s wall, {n_images / cpu:.0f} images per CPU second" if n_images else ""
        print(f"--resize 256, 2 workers, processes: {size_mb / wall:.1f} MB/s{extra}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
