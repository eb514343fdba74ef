"""DVC stage ``shards``: a Places365 tar into validated WebDataset shards, as a Prefect flow.

The flow indexes the tar (headers only), plans member ranges, and maps
:func:`inpnet.data.shard.write_shard` over them as Prefect tasks with retries, on the task
runner ``data.shard.task_runner`` names:

- ``threads`` (default): ``ThreadPoolTaskRunner``; pass-through work is mostly I/O,
  hashing and C-level scanning.
- ``processes``: ``ProcessPoolTaskRunner``; for ``--resize``, where decoding and encoding
  hold the GIL between libjpeg calls.
- ``dask``: ``prefect_dask.DaskTaskRunner`` (install with ``uv sync --extra dask``), a local
  cluster of ``workers`` processes, or an existing cluster with ``--dask-address
  tcp://host:8786``. The tar and the output folder must then be on a filesystem every
  Dask worker sees at the same path; each task ``pread``\\ s its own byte range.

A killed run is resumed by running the same command again: finished shards are kept and
only the missing ones are converted.

    python -m pipelines.shard --split train              # paths from params.yaml (data.*)
    python -m pipelines.shard --split val --tar data/raw/val_large.tar --out data/shards/val
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE

from inpnet.config import DataConfig, ShardConfig, load_params, parse_params
from inpnet.data.manifest import ShardRecord
from inpnet.data.shard import ShardJob, check_inputs, shard_tar
from inpnet.errors import ConfigError
from pipelines.common import base_parser, run_entry, tie_prefect_server


@task(name="write-shard", cache_policy=NO_CACHE, task_run_name="write-{job.name}")
def write_shard_task(fn: Callable[[ShardJob], ShardRecord], job: ShardJob) -> ShardRecord:
    """One shard: ``fn`` is :func:`write_shard` bound to the run's :class:`ShardSpec`."""
    return fn(job)


def _prefect_map(retries: int) -> Callable[[Callable[[ShardJob], ShardRecord], Sequence[ShardJob]], list[ShardRecord]]:
    def run(fn: Callable[[ShardJob], ShardRecord], jobs: Sequence[ShardJob]) -> list[ShardRecord]:
        mapped = write_shard_task.with_options(retries=retries, retry_delay_seconds=1)
        return mapped.map(unmapped(fn), list(jobs)).result()

    return run


@flow(name="shard")
def shard_flow(tar: str, filelist: str, split: str, out: str, cfg: ShardConfig) -> dict[str, Any]:
    """Shard ``tar`` into ``out``; returns the manifest totals."""
    manifest = shard_tar(tar, filelist, split, out, cfg, map_fn=_prefect_map(cfg.retries))
    return manifest.totals


def make_task_runner(cfg: ShardConfig, dask_address: str | None = None) -> Any:
    """The Prefect task runner ``cfg.task_runner`` names, with ``cfg.workers`` workers."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if cfg.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=cfg.workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError(
            "data.shard.task_runner: 'dask' needs prefect-dask; install it with `uv sync --extra dask`"
        ) from None
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1})


def resolve_paths(
    data: DataConfig, split: str, tar: str | None, filelist: str | None, out: str | None
) -> tuple[Path, Path, Path]:
    """Explicit paths, or the defaults under ``data.raw_dir`` / ``data.shards_dir``."""
    if split not in ("train", "val"):
        raise ConfigError(f"--split must be train or val, got {split!r}")
    raw = Path(data.raw_dir)
    official = data.fetch.train.filename if split == "train" else data.fetch.val.filename
    return (
        Path(tar) if tar else raw / official,
        Path(filelist) if filelist else raw / data.fetch.filelist.filename,
        Path(out) if out else Path(data.shards_dir) / split,
    )


def run_shard(
    params: str | Path,
    split: str,
    *,
    tar: str | None = None,
    filelist: str | None = None,
    out: str | None = None,
    resize: int | None = None,
    workers: int | None = None,
    task_runner: str | None = None,
    dask_address: str | None = None,
    resume_check: str | None = None,
    use_prefect: bool = True,
) -> dict[str, Any]:
    """Parse ``params``, apply the command-line overrides, and shard one split."""
    data = load_params(params).data
    overrides = {
        k: v
        for k, v in {
            "resize": resize,
            "workers": workers,
            "task_runner": task_runner,
            "resume_check": resume_check,
        }.items()
        if v is not None
    }
    # validated like params.yaml, so a bad override is a one-line ConfigError naming data.shard.<key>
    cfg = parse_params({"data": {"shard": {**data.shard.model_dump(), **overrides}}}).data.shard
    tar_path, list_path, out_path = resolve_paths(data, split, tar, filelist, out)
    check_inputs(tar_path, list_path, split)  # bad input: one line, before Prefect starts
    if not use_prefect:
        return shard_tar(tar_path, list_path, split, out_path, cfg).totals
    runner = make_task_runner(cfg, dask_address)
    tie_prefect_server()  # the `inpnet data shard` path does not go through run_entry
    return shard_flow.with_options(task_runner=runner)(str(tar_path), str(list_path), split, str(out_path), cfg)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--split", required=True, choices=["train", "val"], help="which file list labels the tar")
    parser.add_argument("--tar", help="Places365 tar (default: data.raw_dir / the official file name)")
    parser.add_argument("--filelist", help="filelist_places365-standard.tar or the split's .txt list")
    parser.add_argument("--out", help="split folder for shards and manifest.json (default: data.shards_dir/SPLIT)")
    parser.add_argument("--resize", type=int, help="re-encode with this shortest side (default: data.shard.resize)")
    parser.add_argument("--workers", type=int, help="parallel shard tasks (default: data.shard.workers)")
    parser.add_argument(
        "--task-runner", choices=["threads", "processes", "dask"], help="default: data.shard.task_runner"
    )
    parser.add_argument("--dask-address", help="scheduler of an existing Dask cluster (task runner dask)")
    parser.add_argument(
        "--resume-check",
        choices=["quick", "sha256"],
        help="how finished shards are trusted (default: data.shard.resume_check)",
    )
    return parser


def main(args: argparse.Namespace) -> None:
    run_shard(
        args.params,
        args.split,
        tar=args.tar,
        filelist=args.filelist,
        out=args.out,
        resize=args.resize,
        workers=args.workers,
        task_runner=args.task_runner,
        dask_address=args.dask_address,
        resume_check=args.resume_check,
    )


if __name__ == "__main__":
    raise SystemExit(run_entry(main, add_arguments(base_parser(__doc__))))
