"""Stream a Places365 tar into WebDataset shards: validated, parallel, resumable, deterministic.

The tar is never extracted. :func:`plan_shards` turns the header-only member index and
the file list into fixed member ranges (one per shard); :func:`write_shard` converts one
range, reading member data with ``pread`` at the offsets the index recorded, so ranges
convert in parallel (threads, processes, or Prefect tasks via ``map_fn``). Each shard is
written as ``.<name>.tmp``, fsynced and renamed; a small record of it goes to
``.partial/`` and the manifest is written last. A re-run converts only shards without a
record or whose file no longer matches it (:func:`inpnet.data.manifest.shard_mismatch`:
size, mtime and the last 64 KiB, or the full sha256 with ``resume_check: sha256``), and
because a shard's bytes depend only on its member range, the tar and the settings (fixed
header fields, integer mtimes, tar order), the result is byte-identical to an
uninterrupted run.

Shard count: ``ceil(samples / samples_per_shard)`` rounded up to a multiple of
``shard_multiple`` (ranks x loader workers), candidates spread evenly (sizes differ by at
most one before image checks). Members rejected by the image check leave their shard a
little short; training with DDP should use the loader's resampled mode.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from inpnet.config import ShardConfig
from inpnet.data.jpeg import (
    DEFAULT_MAX_PIXELS,
    BadImage,
    JpegInfo,
    check_jpeg,
    pixel_problem,
    resize_shortest,
    verify_decode,
)
from inpnet.data.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    ShardRecord,
    fsync_dir,
    load_manifest,
    shard_mismatch,
    tail_sha256,
    write_json_atomic,
)
from inpnet.data.tarindex import (
    KINDS,
    Labels,
    Member,
    TarIndex,
    column_items,
    display_name,
    index_tar,
    list_path,
    member_problem,
    read_labels,
    sample_key,
)
from inpnet.data.tarwriter import TarWriter
from inpnet.errors import DataError
from inpnet.outputs import locks_output

__all__ = [
    "Candidate",
    "JobMembers",
    "ShardJob",
    "ShardPlan",
    "ShardSpec",
    "check_inputs",
    "plan_shards",
    "shard_tar",
    "write_shard",
]

logger = logging.getLogger(__name__)

MapFn = Callable[[Callable[["ShardJob"], ShardRecord], Sequence["ShardJob"]], list[ShardRecord]]
_PARTIAL = ".partial"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A member that passed the header checks and has a label."""

    ordinal: int
    name: str
    offset: int
    size: int
    mtime: int
    label: int
    key: str


class JobMembers:
    """A shard job's members, as :class:`Candidate` objects made on demand from columns.

    In the plan these are views of the whole tar's index (a job costs its ordinals, 4 bytes
    a member); pickled, to a process pool or a Prefect or Dask worker, a job carries only
    its own members' columns and names."""

    def __init__(self, table: TarIndex, rows: np.ndarray, ordinals: np.ndarray, labels: Labels) -> None:
        # rows: the members' positions in ``table`` (and ``labels``); ordinals: their positions in the tar
        self.table, self.rows, self.ordinals, self.labels = table, rows, ordinals, labels

    @classmethod
    def of_plan(cls, members: TarIndex, labels: Labels, ordinals: np.ndarray) -> JobMembers:
        return cls(members, ordinals, ordinals, labels)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Candidate:
        row = int(self.rows[i])
        name = self.table.name(row)
        return Candidate(
            ordinal=int(self.ordinals[i]),
            name=name,
            offset=int(self.table.offsets[row]),
            size=int(self.table.sizes[row]),
            mtime=int(self.table.mtimes[row]),
            label=int(self.labels.label[row]),
            key=sample_key(list_path(name, full=bool(self.labels.full[row]))),
        )

    def __iter__(self) -> Iterator[Candidate]:
        return (self[i] for i in range(len(self)))

    def __reduce__(self) -> tuple[Any, ...]:
        rows = self.rows
        own = dataclasses.replace(self.labels, label=self.labels.label[rows], full=self.labels.full[rows])
        return JobMembers, (self.table.take(rows), np.arange(len(rows)), np.array(self.ordinals), own)


@dataclass(frozen=True)
class ShardJob:
    index: int
    name: str
    members: JobMembers


@dataclass(frozen=True)
class ShardSpec:
    """What every shard task needs besides its job: small and picklable."""

    tar: str
    out_dir: str
    fingerprint: str
    verify: str = "structure"
    resize: int | None = None
    jpeg_quality: int = 95
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ShardPlan:
    jobs: list[ShardJob]
    rejected: list[dict[str, Any]]  # header-level rejections, tar order
    list_missing: int  # file-list entries with no member in the tar


def _reject(member: Member | Candidate, reason: str) -> dict[str, Any]:
    return {"ordinal": member.ordinal, "member": display_name(member.name), "reason": reason}


def plan_shards(
    members: TarIndex,
    labels: Labels,
    *,
    split: str,
    samples_per_shard: int,
    shard_multiple: int,
    tar_name: str = "tar",
    list_name: str = "file list",
) -> ShardPlan:
    """Label, key and split the usable members into shard jobs (no member data is read).

    A member is skipped (a directory), rejected (unsafe, not a regular file, not in the
    list, its name or key already taken by an earlier candidate) or a candidate; the jobs
    are even ranges of the candidates, tar order.
    """
    if len(labels.label) != len(members):
        raise ValueError(f"labels for {len(labels.label)} members, the index has {len(members)}")
    rejected: list[dict[str, Any]] = []
    # The labelled members' names and keys by hash: only the strings another one shares are kept.
    name_hashes, key_hashes = array("q"), array("q")
    for m, label, full in zip(members, column_items(labels.label), column_items(labels.full), strict=True):
        if label >= 0:
            name_hashes.append(hash(m.name))
            key_hashes.append(hash(sample_key(list_path(m.name, full=bool(full)))))
    names, keys = _Taken(name_hashes), _Taken(key_hashes)
    accepted = np.zeros(len(members), bool)
    files, j = 0, -1  # j: the member's place among the labelled ones
    for m, label, full in zip(members, column_items(labels.label), column_items(labels.full), strict=True):
        j += label >= 0
        if m.kind == "dir":
            continue
        problem = member_problem(m)
        if problem is None:
            files += 1
            key = sample_key(list_path(m.name, full=bool(full))) if label >= 0 and keys.shared(key_hashes[j]) else ""
            if label < 0:  # (an earlier candidate of the same name would have the same label)
                problem = f"not in the {split} file list"
            elif names.shared(name_hashes[j]) and names.holder(m.name) is not None:
                problem = "duplicate member name"
            elif key and (holder := keys.holder(key)) is not None:
                problem = f"duplicate key {key!r} (same as {holder!r})"
        if problem is not None:
            rejected.append(_reject(m, problem))
            continue
        if names.shared(name_hashes[j]):
            names.take(m.name, m.name)
        if key:
            keys.take(key, m.name)
        accepted[m.ordinal] = True
    candidates = np.flatnonzero(accepted)
    del accepted
    if len(members) < 1 << 31:
        candidates = candidates.astype(np.int32)  # the plan's one column: half the bytes
    if not len(candidates):
        files_at = np.flatnonzero(members.kinds == KINDS.index("file"))
        example = members.name(int(files_at[0])) if len(files_at) else None
        raise DataError(
            f"{list_name}: the {split} file list matches none of the {files} files in {tar_name}"
            f" (e.g. member {example!r} vs list entry {labels.first_entry!r}); pass the file list and --split that belong to this tar"
        )
    count = math.ceil(len(candidates) / samples_per_shard)
    count = math.ceil(count / shard_multiple) * shard_multiple
    if count > len(candidates):
        logger.warning(
            "%d samples for %d shards (multiple of %d): some shards are empty", len(candidates), count, shard_multiple
        )
    jobs = []
    for i in range(count):  # even spread: shard sizes differ by at most one
        chunk = candidates[i * len(candidates) // count : (i + 1) * len(candidates) // count]
        jobs.append(ShardJob(index=i, name=f"{split}-{i:06d}.tar", members=JobMembers.of_plan(members, labels, chunk)))
    return ShardPlan(jobs=jobs, rejected=rejected, list_missing=labels.entries - len(candidates))


class _Taken:
    """Strings (member names, sample keys) taken by earlier candidates, each with its holder.

    A set of 1.8M strings would cost ~100 bytes each, so only the strings whose hash another
    candidate's shares are kept: a string whose hash is unique cannot have been taken before."""

    def __init__(self, hashes: array[int]) -> None:
        values = np.sort(np.frombuffer(hashes, np.int64) if hashes else np.zeros(0, np.int64))
        self._shared = set(values[1:][values[1:] == values[:-1]].tolist())
        self._holders: dict[str, str] = {}

    def shared(self, value_hash: int) -> bool:
        return value_hash in self._shared

    def holder(self, value: str) -> str | None:
        """Who took ``value`` (whose hash is :meth:`shared`), if anyone."""
        return self._holders.get(value)

    def take(self, value: str, holder: str) -> None:
        self._holders.setdefault(value, holder)


def check_inputs(tar: str | Path, filelist: str | Path, split: str, probe: int = 2000) -> None:
    """Fail fast, before any work is scheduled: a missing tar or file list, or a list that
    matches none of the tar's first ``probe`` members (e.g. the train list for val)."""
    read_labels(filelist, split, TarIndex.empty())  # the list's own errors come first, as the tar's would
    members = index_tar(tar, limit=probe)
    labels = read_labels(filelist, split, members)
    plan_shards(
        members,
        labels,
        split=split,
        samples_per_shard=1,
        shard_multiple=1,
        tar_name=f"{tar} (first {len(members)} members)",
        list_name=str(filelist),
    )


def _prepare(data: bytes, spec: ShardSpec) -> tuple[bytes, JpegInfo]:
    info = check_jpeg(data)
    if (problem := pixel_problem(info.width, info.height, spec.max_pixels)) is not None:
        raise BadImage(f"JPEG is {problem} (data.shard.max_pixels)")  # refused before any decode
    if spec.resize is not None:
        return resize_shortest(data, spec.resize, spec.jpeg_quality, max_pixels=spec.max_pixels)
    if spec.verify == "decode":
        verify_decode(data, max_pixels=spec.max_pixels)
    return data, info


def write_shard(job: ShardJob, spec: ShardSpec) -> ShardRecord:
    """Convert one member range into ``<out_dir>/<job.name>`` (temp name, fsync, rename)."""
    out = Path(spec.out_dir)
    final, tmp = out / job.name, out / f".{job.name}.tmp"
    rejected: list[dict[str, Any]] = []
    samples = 0
    try:
        fd = os.open(spec.tar, os.O_RDONLY)
    except OSError as err:
        raise DataError(f"{spec.tar}: cannot open the tar: {err.strerror}") from None
    try:
        if job.members and hasattr(os, "posix_fadvise"):
            first, last = job.members[0], job.members[-1]
            os.posix_fadvise(fd, first.offset, last.offset + last.size - first.offset, os.POSIX_FADV_SEQUENTIAL)
        writer = TarWriter(tmp)
        try:
            for c in job.members:
                try:
                    data = os.pread(fd, c.size, c.offset)
                except OSError as err:
                    raise DataError(f"{spec.tar}: read error at member {c.name!r}: {err.strerror}") from None
                if len(data) != c.size:
                    rejected.append(_reject(c, f"truncated in the tar (read {len(data)} of {c.size} bytes)"))
                    continue
                try:
                    data, info = _prepare(data, spec)
                except BadImage as err:
                    rejected.append(_reject(c, str(err)))
                    continue
                meta = {"height": info.height, "label": c.label, "path": c.name, "width": info.width}
                writer.add(f"{c.key}.cls", b"%d" % c.label, c.mtime)
                writer.add(f"{c.key}.jpg", data, c.mtime)
                writer.add(f"{c.key}.json", json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(), c.mtime)
                samples += 1
            sha = writer.close()
        except BaseException:
            writer.abort()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        fsync_dir(out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"{tmp}: cannot write the shard: {err.strerror or err}; free space in {out} and re-run (finished shards are kept)"
        ) from None
    finally:
        os.close(fd)
    first_ord = job.members[0].ordinal if job.members else -1
    last_ord = job.members[-1].ordinal if job.members else -2
    record = ShardRecord(
        index=job.index,
        name=job.name,
        member_start=first_ord,
        member_end=last_ord + 1,
        first_member=job.members[0].name if job.members else "",
        last_member=job.members[-1].name if job.members else "",
        samples=samples,
        bytes=final.stat().st_size,
        sha256=sha,
        rejected=rejected,
        tail_sha256=tail_sha256(final),
    )
    _write_partial(out, spec.fingerprint, record)
    logger.debug("wrote %s: %d samples, %d rejected", final, samples, len(rejected))
    return record


def _reusable(
    out: Path, fingerprint: str, plan: ShardPlan, manifest: Manifest | None, *, full: bool
) -> dict[int, ShardRecord]:
    """Records of the shards an earlier run with the same inputs finished, by job index, whose
    files still hold what that run wrote; a shard that does not is logged and left to convert."""
    found: dict[int, tuple[ShardRecord, int]] = {}
    if manifest is not None:
        written = (out / MANIFEST_NAME).stat().st_mtime_ns
        found = {
            job.index: (record, written)
            for job, record in zip(plan.jobs, _manifest_records(manifest, plan), strict=True)
        }
    for job in plan.jobs:
        if job.index not in found and (partial := _partial_record(job, out, fingerprint)) is not None:
            found[job.index] = partial
    records = {}
    for index, (record, written) in sorted(found.items()):
        problem = shard_mismatch(out / record.name, record, written_ns=written, full=full)
        if problem is None:
            records[index] = record
        else:
            logger.warning("%s: %s; writing it again", out / record.name, problem)
    return records


def _write_partial(out: Path, fingerprint: str, record: ShardRecord) -> None:
    write_json_atomic(out / _PARTIAL / f"{record.name}.json", {"fingerprint": fingerprint, "record": asdict(record)})


def _partial_record(job: ShardJob, out: Path, fingerprint: str) -> tuple[ShardRecord, int] | None:
    """The ``.partial/`` record an interrupted run with the same inputs left for ``job``, and its mtime."""
    path = out / _PARTIAL / f"{job.name}.json"
    try:
        data = json.loads(path.read_text())
        record = ShardRecord.from_dict(data["record"])
        if data["fingerprint"] == fingerprint and record.name == job.name:
            return record, path.stat().st_mtime_ns
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _manifest_records(manifest: Manifest, plan: ShardPlan) -> list[ShardRecord]:
    """The manifest's shard records with their own rejections, which the manifest keeps in one
    list (tar order) together with the header-level ones of ``plan``."""
    header_level = {r["ordinal"] for r in plan.rejected}
    own = [r for r in manifest.rejected if r["ordinal"] not in header_level]
    ordinals = [r["ordinal"] for r in own]
    return [
        dataclasses.replace(
            s, rejected=own[bisect.bisect_left(ordinals, s.member_start) : bisect.bisect_left(ordinals, s.member_end)]
        )
        for s in manifest.shards
    ]


def _fingerprint(members: TarIndex, list_sha256: str, settings: dict[str, Any]) -> tuple[str, str]:
    index = hashlib.sha256()
    for m in members:  # name, offset, size and kind of every member
        index.update(f"{m.name}\0{m.offset}\0{m.size}\0{m.kind}\n".encode("utf-8", "surrogateescape"))
    blob = json.dumps(
        {
            "format": FORMAT_VERSION,
            "index": index.hexdigest(),
            "list": list_sha256,
            "settings": settings,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest(), index.hexdigest()


def local_map(workers: int, kind: str = "threads") -> MapFn:
    """A ``map_fn`` over a thread or process pool (``workers == 1``: in this thread)."""

    def run(fn: Callable[[ShardJob], ShardRecord], jobs: Sequence[ShardJob]) -> list[ShardRecord]:
        if workers <= 1 or len(jobs) <= 1:
            return [fn(job) for job in jobs]
        pool: Executor = ProcessPoolExecutor(workers) if kind == "processes" else ThreadPoolExecutor(workers)
        try:
            futures = [pool.submit(fn, job) for job in jobs]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return run


def _clean_stale(out: Path, split: str, keep: set[str]) -> None:
    """Remove leftovers of earlier runs: temp files, shards not in this plan."""
    for path in out.glob(f".{split}-*.tar.tmp"):
        path.unlink(missing_ok=True)
    for path in out.glob(f"{split}-*.tar"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


@locks_output("out_dir")
def shard_tar(
    tar: str | Path,
    filelist: str | Path,
    split: str,
    out_dir: str | Path,
    cfg: ShardConfig,
    *,
    map_fn: MapFn | None = None,
) -> Manifest:
    """Convert ``tar`` into validated shards under ``out_dir``; returns the manifest.

    ``map_fn(fn, jobs)`` runs ``fn`` on every job and returns the records in job order
    (a Prefect flow passes one that maps tasks); by default a local pool of
    ``cfg.workers`` threads or processes (``cfg.task_runner``). ``out_dir`` is locked for
    the run (:class:`inpnet.outputs.FolderLock`): a second run into it fails at once.
    """
    tar, out = Path(tar), Path(out_dir)
    members = index_tar(tar)
    labels = read_labels(filelist, split, members)
    settings = {
        "resize": cfg.resize,
        "jpeg_quality": cfg.jpeg_quality,
        "verify": cfg.verify,
        "max_pixels": cfg.max_pixels,
        "samples_per_shard": cfg.samples_per_shard,
        "shard_multiple": cfg.shard_multiple,
    }
    fingerprint, index_sha = _fingerprint(members, labels.sha256, settings)
    plan = plan_shards(
        members,
        labels,
        split=split,
        samples_per_shard=cfg.samples_per_shard,
        shard_multiple=cfg.shard_multiple,
        tar_name=str(tar),
        list_name=str(filelist),
    )
    manifest = _same_manifest(out, fingerprint, plan)
    records = _reusable(out, fingerprint, plan, manifest, full=cfg.resume_check == "sha256")
    if manifest is not None and len(records) == len(plan.jobs):
        logger.info("%s: %d shards already complete, nothing to do", out, len(records))
        return manifest
    try:
        (out / _PARTIAL).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{out}: cannot create the output folder: {err.strerror}") from None
    for record in records.values():  # what the manifest vouched for survives an interruption from here on
        if not (out / _PARTIAL / f"{record.name}.json").is_file():
            _write_partial(out, fingerprint, record)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest while shards may change
    _clean_stale(out, split, {job.name for job in plan.jobs})
    spec = ShardSpec(
        tar=str(tar.resolve()),
        out_dir=str(out.resolve()),
        fingerprint=fingerprint,
        verify=cfg.verify,
        resize=cfg.resize,
        jpeg_quality=cfg.jpeg_quality,
        max_pixels=cfg.max_pixels,
    )
    todo = [job for job in plan.jobs if job.index not in records]
    logger.info("%s: %d shards planned, %d already done, converting %d", out, len(plan.jobs), len(records), len(todo))
    runner = map_fn or local_map(cfg.workers, cfg.task_runner)
    for job, record in zip(todo, runner(partial(write_shard, spec=spec), todo), strict=True):
        records[job.index] = record
    shards = [records[job.index] for job in plan.jobs]
    rejected = sorted(plan.rejected + [r for s in shards for r in s.rejected], key=lambda r: r["ordinal"])
    source = {
        "tar": str(tar),
        "tar_bytes": tar.stat().st_size,
        "members": len(members),
        "index_sha256": index_sha,
        "filelist": str(filelist),
        "list_sha256": labels.sha256,
        "list_entries": labels.entries,
        "list_entries_not_in_tar": plan.list_missing,
    }
    manifest = Manifest(
        split=split, fingerprint=fingerprint, source=source, settings=settings, shards=shards, rejected=rejected
    )
    manifest.write(out)
    shutil.rmtree(out / _PARTIAL, ignore_errors=True)
    totals = manifest.totals
    logger.info(
        "%s: %d samples in %d shards, %d members rejected", out, totals["samples"], totals["shards"], totals["rejected"]
    )
    return manifest


def _same_manifest(out: Path, fingerprint: str, plan: ShardPlan) -> Manifest | None:
    """The manifest of an earlier run of this plan with the same inputs, else None."""
    if not (out / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = load_manifest(out)
    except DataError:
        return None
    if manifest.fingerprint != fingerprint or [s.name for s in manifest.shards] != [j.name for j in plan.jobs]:
        return None
    return manifest
