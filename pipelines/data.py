"""DVC stage ``data``: the three Places365 files in ``data.raw_dir``.

``data.source: sample`` writes the embedded offline sample (same names and layout);
``data.source: places365`` downloads the official files with resume and checksums.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task

from inpnet.config import DataConfig, load_params
from pipelines.common import base_parser, run_entry


@task(name="write-sample")
def write_sample_task(data: DataConfig) -> list[str]:
    from inpnet.data.sample import write_sample

    return [str(p) for p in write_sample(Path(data.raw_dir), data.sample).values()]


@task(name="fetch-places365", retries=2, retry_delay_seconds=30)
def fetch_task(data: DataConfig, what: str) -> list[str]:
    from inpnet.data.fetch import fetch_places365

    return [str(p) for p in fetch_places365(what, Path(data.raw_dir), data.fetch, None)]


@flow(name="data", log_prints=True)
def data_flow(data: DataConfig) -> list[str]:
    """Produce train tar, val tar and file-list tar under ``data.raw_dir``."""
    if data.source == "sample":
        return write_sample_task(data)
    paths: list[str] = []
    for what in ("filelist", "val", "train"):  # smallest first: a bad URL fails fast
        paths += fetch_task(data, what)
    return paths


def main(args: argparse.Namespace) -> None:
    data_flow(load_params(args.params).data)


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))
