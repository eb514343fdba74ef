"""Scale simulation of sharding: a multi-GB Places365-layout tar through the sharder, in one run.

    uv run python bench/scale.py                 # >= 5 GB and >= 12,000 members (2 min 47 s on 2 cores at load 7-8)
    uv run python bench/scale.py --quick         # ~200 MB smoke run
    uv run python bench/scale.py --size-gb 10 --workers 4 --workdir /mnt/scratch --keep

The tar is written to disk (``--workdir``, default a temp dir; removed at the end unless
``--keep``), not piped: the sharder reads its header index first and then ``pread``\\ s each
shard's member range at the recorded offsets, so it needs a file. Its members are
``data_large/c/categoryNN/NNNNNNNN.jpg`` with a train file list, as in Places365's
train_large; their JPEGs are 48 crops of real photographs at 1024-2048 px shortest side
(512-1024 with ``--quick``), reused under many names, and the output gives their size
distribution. A prefix of the tar (its first 1/5, so 1 GB of 5 GB) is cut as a second tar.

For the prefix and for the whole tar, each after one untimed ``cat`` (every read is warm;
the output says whether the tar fits in memory):

- ``cat FILE > /dev/null``, the raw-read peer, and a plain copy (read + write + fsync);
- the sharder as the pipeline runs it (``inpnet.data.shard.shard_tar``, ``data.shard`` of
  ``--params``, all ``--workers``) in a child process: MB/s of the input tar inside
  ``shard_tar`` (the child's start-up is left out), its ratio to each peer, MB per CPU
  second (on a loaded machine, what dedicated cores would give), and the peak RSS of the
  largest process (its kernel high-water mark, VmHWM) and of the whole process tree (the sum of
  VmRSS, polled every 20 ms).
  Flat: the whole tar's peak over the prefix's stays near 1.

Then, on the whole tar, the sharder is SIGKILLed once half of the members are in finished
shards (it records each in ``.partial/``), started again and timed to the end. The output
says how many members the restart kept (their shard files keep inode and mtime) and
whether the result equals the uninterrupted run: the same shard names, sample counts,
sizes and sha256 as that run's manifest, every shard file hashed again.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GB = 1e9
MB = 1e6
SPLIT = "train"
POLL_S = 0.02  # RSS and progress polling
PLACES365_TRAIN = 1_803_460  # images in train_large_places365standard.tar
TREE_EVERY_S = 0.5  # the process tree is listed this often (a scan of /proc), its members' RSS read every poll


@dataclass
class Run:
    """One sharder process, spawn to exit."""

    wall_s: float
    shard_s: float | None  # shard_tar's own wall time inside the child (None when killed)
    cpu_s: float | None  # and its CPU time: the child's threads and the pool processes it joined
    max_rss: int  # bytes, the largest peak of one process (its VmHWM, the kernel's high-water mark)
    tree_rss: int  # bytes, the largest sum of VmRSS over the process tree seen by polling
    killed_after_s: float | None = None
    done_at_kill: int = 0  # samples in finished shards when the kill was sent


def child(spec_path: Path) -> None:
    """The sharder process: ``shard_tar`` on the spec's paths and config; its times go to the spec's result file."""
    from shard import timed  # bench/shard.py: wall and CPU seconds, pool processes included

    from inpnet.config import ShardConfig
    from inpnet.data.shard import shard_tar

    spec = json.loads(spec_path.read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    wall, cpu = timed(lambda: shard_tar(spec["tar"], spec["filelist"], SPLIT, spec["out"], ShardConfig(**spec["cfg"])))
    Path(spec["result"]).write_text(json.dumps({"shard_s": wall, "cpu_s": cpu}))


def _finished_samples(partial: Path, seen: dict[str, int]) -> int:
    """Samples in the shards recorded in ``partial`` (``.partial/`` of an output folder); ``seen`` caches the reads."""
    try:
        names = [e.name for e in os.scandir(partial) if e.name.endswith(".json") and e.name not in seen]
    except FileNotFoundError:
        return 0
    for name in names:
        try:
            seen[name] = json.loads((partial / name).read_text())["record"]["samples"]
        except (OSError, ValueError, KeyError):
            continue  # being written (write_json_atomic renames, so this is rare): read it next poll
    return sum(seen.values())


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process ``pid`` in bytes; (0, 0) once it is gone.

    VmHWM, not the ``ru_maxrss`` that ``wait4`` reports: a forked child's ``ru_maxrss``
    starts at its parent's size (the kernel keeps the pre-exec high-water mark), VmHWM
    counts from ``exec``."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return values["VmRSS"], values["VmHWM"]


def run_sharder(
    work: Path, tar: Path, filelist: Path, out: Path, cfg: dict[str, Any], *, kill_at: int | None = None
) -> Run:
    """Shard ``tar`` into ``out`` in a child process; SIGKILL it once ``kill_at`` samples are in finished shards."""
    import psutil

    result = work / "result.json"
    result.unlink(missing_ok=True)
    spec = work / "spec.json"
    spec.write_text(
        json.dumps({"tar": str(tar), "filelist": str(filelist), "out": str(out), "cfg": cfg, "result": str(result)})
    )
    log = work / "sharder.log"
    with open(log, "ab") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(spec)],
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # its own process group: the kill reaches pool workers too
        )
    root = psutil.Process(proc.pid)
    pids, listed, tree_peak = [proc.pid], 0.0, 0
    hwm: dict[int, int] = {}
    seen: dict[str, int] = {}
    killed_after, done_at_kill = None, 0
    while proc.poll() is None:
        now = time.perf_counter()
        if now - listed >= TREE_EVERY_S:
            with contextlib.suppress(psutil.Error):
                pids, listed = [proc.pid, *(c.pid for c in root.children(recursive=True))], now
        readings = [_memory(pid) for pid in pids]
        tree_peak = max(tree_peak, sum(rss for rss, _ in readings))
        for pid, (_, peak) in zip(pids, readings, strict=True):
            hwm[pid] = max(hwm.get(pid, 0), peak)
        if kill_at is not None and killed_after is None:
            done = _finished_samples(out / ".partial", seen)
            if done >= kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_after, done_at_kill = now - start, done
        time.sleep(POLL_S)
    wall = time.perf_counter() - start
    if kill_at is not None and killed_after is None:
        raise SystemExit(
            f"the sharder finished (exit {proc.returncode}) before {kill_at} samples were in finished shards: "
            f"pass a larger --size-gb or a smaller --samples-per-shard; log: {log}"
        )
    if killed_after is None and proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"the sharder failed (exit {proc.returncode}); the end of {log}:\n{tail}")
    times = json.loads(result.read_text()) if killed_after is None else {"shard_s": None, "cpu_s": None}
    return Run(
        wall_s=wall,
        shard_s=times["shard_s"],
        cpu_s=times["cpu_s"],
        max_rss=max(hwm.values(), default=0),
        tree_rss=tree_peak,
        killed_after_s=killed_after,
        done_at_kill=done_at_kill,
    )


def index_bytes(tar: Path, filelist: Path, cfg: dict[str, Any]) -> tuple[int, int, int]:
    """Python heap that shard_tar's header index, labels and shard plan of ``tar`` take: the one part
    of the sharder's memory that grows with the tar (member data is read a shard at a time).
    ``(members, bytes held once the plan is made, peak bytes while it is made)``, by tracemalloc."""
    import tracemalloc

    from inpnet.data.shard import plan_shards
    from inpnet.data.tarindex import index_tar, read_labels

    tracemalloc.start()
    try:
        members = index_tar(tar)
        labels = read_labels(filelist, SPLIT, members)
        plan = plan_shards(
            members,
            labels,
            split=SPLIT,
            samples_per_shard=cfg["samples_per_shard"],
            shard_multiple=cfg["shard_multiple"],
        )
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.jobs
    return len(members), held, peak


def index_figures(prefix: tuple[int, int, int], whole: tuple[int, int, int]) -> dict[str, float]:
    """Bytes a member of the whole tar, and what each member past the prefix added: the second is
    free of fixed costs (a block of Python objects while the index is walked), so it is what
    Places365's 1.8M members would cost."""
    added = whole[0] - prefix[0]
    return {
        "bytes_per_member": whole[1] / whole[0],
        "peak_bytes_per_member": whole[2] / whole[0],
        "added_bytes_per_member": (whole[1] - prefix[1]) / added,
        "added_peak_bytes_per_member": (whole[2] - prefix[2]) / added,
    }


def warm(path: Path) -> None:
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)


def measure(work: Path, tar: Path, filelist: Path, cfg: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """cat, plain copy and an uninterrupted sharder run of one tar; the figures and the output folder."""
    from shard import plain_copy, timed  # bench/shard.py: the same peers, timed the same way

    size = tar.stat().st_size
    warm(tar)
    cat_s, _ = timed(lambda: warm(tar))
    out = work / f"shards-{tar.stem}"
    run = run_sharder(work, tar, filelist, out, cfg)
    copy_s, _ = timed(lambda: plain_copy(tar, work / "copy.tar"))  # after the sharder: its read found the tar warm
    (work / "copy.tar").unlink()
    assert run.shard_s is not None and run.cpu_s is not None
    figures = {
        "tar_bytes": size,
        "cat_mb_s": size / MB / cat_s,
        "copy_mb_s": size / MB / copy_s,
        "shard_mb_s": size / MB / run.shard_s,
        "shard_wall_s": run.wall_s,
        "shard_mb_per_cpu_s": size / MB / max(run.cpu_s, 1e-9),
        **{k: v for k, v in asdict(run).items() if k in ("shard_s", "cpu_s", "max_rss", "tree_rss")},
    }
    figures["shard_over_cat"] = figures["shard_mb_s"] / figures["cat_mb_s"]
    figures["shard_over_copy"] = figures["shard_mb_s"] / figures["copy_mb_s"]
    return figures, out


def shard_key(manifest: Any) -> list[tuple[str, int, int, str]]:
    return [(s.name, s.samples, s.bytes, s.sha256) for s in manifest.shards]


def resume(
    work: Path,
    tar: Path,
    filelist: Path,
    cfg: dict[str, Any],
    reference: list[tuple[str, int, int, str]],
    *,
    keep: bool,
) -> dict[str, Any]:
    """SIGKILL at half the members, restart, time it; what it kept and whether the output equals ``reference``."""
    from inpnet.data.manifest import load_manifest
    from inpnet.registry.tracking import file_sha256

    out = work / "shards-resumed"
    samples = sum(r[1] for r in reference)
    warm(tar)
    killed = run_sharder(work, tar, filelist, out, cfg, kill_at=(samples + 1) // 2)
    finished = {}  # shard name -> (inode, mtime_ns, samples) of what the killed run had finished
    for record_path in (out / ".partial").glob("*.json"):
        record = json.loads(record_path.read_text())["record"]
        stat = (out / record["name"]).stat()
        finished[record["name"]] = (stat.st_ino, stat.st_mtime_ns, record["samples"])
    warm(tar)
    restart = run_sharder(work, tar, filelist, out, cfg)
    kept = [name for name, (ino, mtime, _) in finished.items() if _same_file(out / name, ino, mtime)]
    kept_samples = sum(finished[name][2] for name in kept)
    resumed = load_manifest(out)
    rehashed = all(file_sha256(out / name) == sha for name, _, _, sha in reference)
    if not keep:
        shutil.rmtree(out)
    return {
        "killed_after_s": killed.killed_after_s,
        "done_at_kill": killed.done_at_kill,
        "finished_at_kill": sum(f[2] for f in finished.values()),
        "shards_at_kill": len(finished),
        "restart_wall_s": restart.wall_s,
        "restart_shard_s": restart.shard_s,
        "kept_samples": kept_samples,
        "kept_shards": len(kept),
        "redone_samples": samples - kept_samples,
        "samples": samples,
        "identical": shard_key(resumed) == reference and rehashed,
    }


def _same_file(path: Path, ino: int, mtime_ns: int) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return (stat.st_ino, stat.st_mtime_ns) == (ino, mtime_ns)


def size_summary(variants: list[bytes]) -> dict[str, float]:
    kb = sorted(len(v) / 1e3 for v in variants)
    return {
        "min_kb": kb[0],
        "median_kb": statistics.median(kb),
        "mean_kb": statistics.fmean(kb),
        "p90_kb": kb[int(0.9 * (len(kb) - 1))],
        "max_kb": kb[-1],
    }


def mem_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, help="the whole tar is at least this large (default 5; --quick 0.2)")
    parser.add_argument("--members", type=int, help="and has at least this many members (default 12000; --quick 1000)")
    parser.add_argument("--prefix-gb", type=float, help="the smaller tar cut from its front (default size / 5)")
    parser.add_argument("--workers", type=int, help="sharder workers (default: data.shard.workers of --params)")
    parser.add_argument("--samples-per-shard", type=int, help="default: data.shard.samples_per_shard of --params")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="data.shard comes from here")
    parser.add_argument("--quick", action="store_true", help="a ~200 MB run of 512-1024 px JPEGs (a smoke test)")
    parser.add_argument("--workdir", type=Path, help="scratch folder on the disk to measure (default: a temp dir)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder: the whole tar, its file list and the resumed shards"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the photo crops")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: be the sharder process
    args = parser.parse_args(argv)
    if args.child:
        return args
    args.size_gb = args.size_gb if args.size_gb is not None else (0.2 if args.quick else 5.0)
    args.members = args.members if args.members is not None else (1000 if args.quick else 12000)
    args.prefix_gb = args.prefix_gb if args.prefix_gb is not None else args.size_gb / 5
    if args.size_gb <= 0 or args.members < 1:
        parser.error(f"--size-gb must be > 0 and --members >= 1, got {args.size_gb} and {args.members}")
    if not 0 < args.prefix_gb < args.size_gb:
        parser.error(f"--prefix-gb must be between 0 and --size-gb ({args.size_gb}), got {args.prefix_gb}")
    return args


def shard_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``data.shard`` of ``--params`` with the command line's overrides, validated like params.yaml."""
    from inpnet.config import load_params, parse_params

    cfg = load_params(args.params).data.shard.model_dump()
    overrides = {"workers": args.workers, "samples_per_shard": args.samples_per_shard}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return parse_params({"data": {"shard": cfg}}).data.shard.model_dump()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child)
        return
    from places_like import PHOTOS, photo_variants, prefix_tar, write_tar

    cfg = shard_settings(args)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.workdir))
    figures: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "settings": cfg}
    try:
        sides, qualities = ((512, 1024) if args.quick else (1024, 2048)), (88, 95)
        start = time.perf_counter()
        variants = photo_variants(48, seed=args.seed, sides=sides, qualities=qualities)
        tar, filelist = work / "train_large_places365standard.tar", work / "places365_train_standard.txt"
        ends = write_tar(tar, filelist, variants, args.members, min_bytes=int(args.size_gb * GB))
        build_s = time.perf_counter() - start
        k = min(bisect.bisect_left(ends, int(args.prefix_gb * GB)) + 1, len(ends) - 1)
        small, small_list = work / "prefix.tar", work / "prefix_list.txt"
        prefix_tar(tar, filelist, small, small_list, ends[k - 1], k)
        figures["jpeg"] = {
            "photos": list(PHOTOS),
            "sides": sides,
            "qualities": qualities,
            "variants": len(variants),
            **size_summary(variants),
        }
        figures["build_s"] = build_s
        figures["members"] = {"prefix": k, "whole": len(ends)}
        mem_total, mem_avail = mem_kb("MemTotal") * 1e3, mem_kb("MemAvailable") * 1e3
        figures["memory"] = {"total": mem_total, "available": mem_avail}

        figures["prefix"], out = measure(work, small, small_list, cfg)
        shutil.rmtree(out)
        index_bytes(small, small_list, cfg)  # first use imports modules and fills caches: not the index's
        prefix_index = index_bytes(small, small_list, cfg)
        small.unlink()
        figures["whole"], out = measure(work, tar, filelist, cfg)
        from inpnet.data.manifest import load_manifest

        reference = shard_key(load_manifest(out))
        shutil.rmtree(out)
        figures["index"] = index_figures(prefix_index, index_bytes(tar, filelist, cfg))
        figures["resume"] = resume(work, tar, filelist, cfg, reference, keep=args.keep)
        figures["resume"]["uninterrupted_s"] = figures["whole"]["shard_wall_s"]
        figures["load_after"] = os.getloadavg()
        report(figures, tar, args)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(f: dict[str, Any], tar: Path, args: argparse.Namespace) -> None:
    j, m, s = f["jpeg"], f["members"], f["settings"]
    photos = ", ".join(j["photos"])
    p, w, r, x = f["prefix"], f["whole"], f["resume"], f["index"]
    fits = "fit" if 2 * w["tar_bytes"] < f["memory"]["total"] else "does not fit"
    print(
        f"tar: {w['tar_bytes'] / GB:.2f} GB, {m['whole']:,} members data_large/c/categoryNN/NNNNNNNN.jpg + train list, "
        f"written to disk in {f['build_s']:.0f} s ({tar.parent}; the sharder preads by offset, so a file, not a pipe)"
    )
    print(
        f"JPEGs: {j['variants']} crops of {len(j['photos'])} photos ({photos}), shortest side {j['sides'][0]}-{j['sides'][1]} px, "
        f"quality {j['qualities'][0]}-{j['qualities'][1]}, cycled over the members: "
        f"min {j['min_kb']:.0f} KB, median {j['median_kb']:.0f}, mean {j['mean_kb']:.0f}, "
        f"p90 {j['p90_kb']:.0f}, max {j['max_kb']:.0f} (Places365 train_large: ~58 KB mean at 512 px)"
    )
    print(
        f"machine: {f['cpus']} CPUs, load {_load(f['load_before'])} before and {_load(f['load_after'])} after; "
        f"{f['memory']['total'] / GB:.0f} GB RAM ({f['memory']['available'] / GB:.0f} GB available): "
        f"tar + shards {fits} in the page cache together; every timed read follows an untimed cat (warm)"
    )
    print(
        f"sharder: shard_tar in a child process, {s['workers']} workers ({s['task_runner']}), "
        f"{s['samples_per_shard']} samples per shard, resize {s['resize']}, verify {s['verify']} ({args.params} data.shard)"
    )
    rows = [
        ("tar size (GB)", lambda x: f"{x['tar_bytes'] / GB:.2f}"),
        ("cat > /dev/null (MB/s)", lambda x: f"{x['cat_mb_s']:.0f}"),
        ("plain copy, read + write + fsync (MB/s)", lambda x: f"{x['copy_mb_s']:.0f}"),
        ("sharder, inside shard_tar (MB/s)", lambda x: f"{x['shard_mb_s']:.0f}"),
        ("sharder / cat", lambda x: f"{x['shard_over_cat']:.2f}"),
        ("sharder / plain copy", lambda x: f"{x['shard_over_copy']:.2f}"),
        ("sharder MB per CPU second", lambda x: f"{x['shard_mb_per_cpu_s']:.0f}"),
        ("sharder process wall, start-up included (s)", lambda x: f"{x['shard_wall_s']:.1f}"),
        ("peak RSS, largest process (MB)", lambda x: f"{x['max_rss'] / MB:.0f}"),
        ("peak RSS, process tree (MB)", lambda x: f"{x['tree_rss'] / MB:.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"  {'':<{width}}  {'prefix':>9}  {'whole':>9}")
    print(f"  {'members':<{width}}  {m['prefix']:>9,}  {m['whole']:>9,}")
    for name, fmt in rows:
        print(f"  {name:<{width}}  {fmt(p):>9}  {fmt(w):>9}")
    print(
        f"peak RSS whole / prefix: {w['max_rss'] / p['max_rss']:.2f}x (largest process), "
        f"{w['tree_rss'] / p['tree_rss']:.2f}x (tree), for {w['tar_bytes'] / p['tar_bytes']:.1f}x the bytes "
        f"and {m['whole'] / m['prefix']:.1f}x the members ({(w['max_rss'] - p['max_rss']) / MB:+.0f} MB)"
    )
    print(
        f"index in memory: {x['bytes_per_member']:.0f} bytes a member (header index, labels and shard plan, "
        f"tracemalloc; {x['peak_bytes_per_member']:.0f} at the peak, while the list is joined); each member past "
        f"the prefix added {x['added_bytes_per_member']:.0f} ({x['added_peak_bytes_per_member']:.0f} at the peak), "
        f"so Places365's {PLACES365_TRAIN:,} train members would hold "
        f"{x['added_bytes_per_member'] * PLACES365_TRAIN / MB:.0f} MB "
        f"({x['added_peak_bytes_per_member'] * PLACES365_TRAIN / MB:.0f} MB at the peak)"
    )
    share = r["redone_samples"] / r["samples"]
    expected = share * r["uninterrupted_s"]
    print(
        f"resume: SIGKILL after {r['killed_after_s']:.1f} s with {r['finished_at_kill']:,} of {r['samples']:,} samples "
        f"({r['finished_at_kill'] / r['samples']:.0%}) in {r['shards_at_kill']} finished shards; the restart took "
        f"{r['restart_wall_s']:.1f} s (uninterrupted run {r['uninterrupted_s']:.1f} s; its {share:.0%} still to do "
        f"would take {expected:.1f} s: {r['restart_wall_s'] - expected:+.1f} s for restarting), "
        f"kept {r['kept_samples']:,} samples in {r['kept_shards']} untouched shard files, redid {r['redone_samples']:,}; "
        f"output {'equals' if r['identical'] else 'DIFFERS FROM'} the uninterrupted run's "
        "(shard names, samples, bytes, sha256 of every file)"
    )


def _load(avg: tuple[float, float, float] | list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in avg)


if __name__ == "__main__":
    sys.exit(main())
