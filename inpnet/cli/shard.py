"""`inpnet data shard`: stream a Places365 tar into validated WebDataset shards."""

from __future__ import annotations

from pathlib import Path

import typer

from inpnet.cli.app import PARAMS_HELP, data_app


@data_app.command("shard")
def shard_command(
    split: str = typer.Option(..., "--split", help="train or val: which Places365 file list labels the tar."),
    tar: Path | None = typer.Option(
        None, "--tar", help="The Places365 tar (default: data.raw_dir / its official name)."
    ),
    filelist: Path | None = typer.Option(
        None, "--filelist", help="filelist_places365-standard.tar or the split's .txt list (default: in data.raw_dir)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Split folder for the shards and manifest.json (default: data.shards_dir/SPLIT)."
    ),
    resize: int | None = typer.Option(
        None, "--resize", min=16, help="Re-encode with this shortest side (default: data.shard.resize)."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Parallel shard tasks (default: data.shard.workers)."
    ),
    task_runner: str | None = typer.Option(
        None, "--task-runner", help="threads | processes | dask (default: data.shard.task_runner)."
    ),
    dask_address: str | None = typer.Option(
        None, "--dask-address", help="Scheduler address of an existing Dask cluster."
    ),
    resume_check: str | None = typer.Option(
        None,
        "--resume-check",
        help="quick | sha256: how finished shards are trusted on a re-run (default: data.shard.resume_check).",
    ),
    no_prefect: bool = typer.Option(
        False, "--no-prefect", help="Run in a local thread/process pool instead of a Prefect flow."
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
) -> None:
    """Shard a tar without extracting it; a re-run after a kill converts only missing shards."""
    from pipelines.shard import run_shard

    totals = run_shard(
        params,
        split,
        tar=str(tar) if tar else None,
        filelist=str(filelist) if filelist else None,
        out=str(out) if out else None,
        resize=resize,
        workers=workers,
        task_runner=task_runner,
        dask_address=dask_address,
        resume_check=resume_check,
        use_prefect=not no_prefect,
    )
    typer.echo(
        f"{totals['samples']} samples in {totals['shards']} shards ({totals['bytes'] / 1e6:.1f} MB), "
        f"{totals['rejected']} members rejected (see manifest.json)"
    )
