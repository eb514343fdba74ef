"""DVC stage ``remote`` (``always_changed``): what the data source looks like now.

Writes ``data.remote_state`` (``data/remote.json``): the ETag / Last-Modified /
Content-Length of each Places365 URL, or a digest of each photograph of the embedded
sample. The ``data`` stage depends on that file, so DVC re-runs it (and everything
downstream) only when the remote files changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect import flow, task

from inpnet.config import DataConfig, load_params
from pipelines.common import base_parser, run_entry


@task(name="remote-state", retries=2, retry_delay_seconds=10)
def remote_state_task(data: DataConfig) -> dict[str, Any]:
    from inpnet.data.remote import write_remote_state

    return write_remote_state(data, Path(data.remote_state))


@flow(name="remote", log_prints=True)
def remote_flow(data: DataConfig) -> dict[str, Any]:
    return remote_state_task(data)


def main(args: argparse.Namespace) -> None:
    remote_flow(load_params(args.params).data)


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))
