"""DVC stage ``data``: the three Places365 files in ``data.raw_dir``.

``data.source: sample`` writes the embedded offline sample (same names and layout);
``data.source: places365`` downloads the official files with resume and checksums.

``data.raw_dir`` is a ``persist`` output (DVC does not delete it before this stage runs), so
this code decides what to keep: the files and ``.part`` files of the current source, unless
``data.remote_state`` says the server's copy changed since they were fetched; anything
else in the folder (another source's files, stray names) is removed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from prefect import flow, task

from inpnet.config import DataConfig, load_params
from inpnet.errors import DataError
from pipelines.common import base_parser, run_entry

log = logging.getLogger(__name__)


@task(name="write-sample")
def write_sample_task(data: DataConfig) -> list[str]:
    from inpnet.data.sample import write_sample

    return [str(p) for p in write_sample(Path(data.raw_dir), data.sample).values()]


@task(name="fetch-places365", retries=2, retry_delay_seconds=30)
def fetch_task(data: DataConfig, what: str, validators: dict[str, dict[str, Any]] | None) -> list[str]:
    from inpnet.data.fetch import fetch_places365

    return [str(p) for p in fetch_places365(what, Path(data.raw_dir), data.fetch, None, validators=validators)]


def _kept_names(data: DataConfig) -> set[str]:
    """The names the current source may leave in ``raw_dir``: its files, partial files and records."""
    from inpnet.data.remote import validators_path
    from inpnet.data.sample import SAMPLE_FILES

    if data.source == "sample":
        return set(SAMPLE_FILES.values())
    names = {getattr(data.fetch, part).filename for part in ("train", "val", "filelist")}
    return names | {f"{n}.part" for n in names} | {validators_path(Path(n)).name for n in names}


def remove_stale(data: DataConfig) -> list[Path]:
    """Delete what ``raw_dir`` holds beyond :func:`_kept_names`; returns the deleted paths."""
    raw = Path(data.raw_dir)
    if not raw.is_dir():
        return []
    keep = _kept_names(data)
    stale = sorted(p for p in raw.iterdir() if p.name not in keep)
    for path in stale:
        if path.is_dir():
            raise DataError(f"{path}: unexpected folder in data.raw_dir={raw}; move it away and re-run")
        log.warning("removing %s: not a file of data.source=%s", path, data.source)
        path.unlink()
    return stale


def read_validators(data: DataConfig) -> dict[str, dict[str, Any]] | None:
    """The per-part validators of ``data.remote_state`` (written by stage ``remote``), if present."""
    path = Path(data.remote_state)
    if not path.is_file():
        log.warning("%s missing (stage remote not run): a changed remote file would not be noticed", path)
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable remote state ({err}); re-run `dvc repro remote`") from None
    if state.get("source") != data.source:
        raise DataError(
            f"{path} describes source {state.get('source')!r}, but data.source is {data.source!r}; "
            "re-run `dvc repro remote`"
        )
    files: dict[str, dict[str, Any]] = state["files"]
    return files


@flow(name="data", log_prints=True)
def data_flow(data: DataConfig) -> list[str]:
    """Produce train tar, val tar and file-list tar under ``data.raw_dir``."""
    remove_stale(data)
    if data.source == "sample":
        return write_sample_task(data)
    validators = read_validators(data)
    paths: list[str] = []
    for what in ("filelist", "val", "train"):  # smallest first: a bad URL fails fast
        paths += fetch_task(data, what, validators)
    return paths


def main(args: argparse.Namespace) -> None:
    data_flow(load_params(args.params).data)


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))
