"""`inpnet data fetch` and `inpnet data sample`: the Places365 files, downloaded or embedded."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

from inpnet.cli.app import PARAMS_HELP, data_app


class FetchPart(str, enum.Enum):  # noqa: UP042 - StrEnum changes str() and format(), which typer uses
    train = "train"
    val = "val"
    filelist = "filelist"
    all = "all"


@data_app.command("fetch")
def fetch(
    what: FetchPart = typer.Option(
        ..., "--what", help="Which official file: train (105 GB), val (2 GB), filelist, or all."
    ),
    dest: Path | None = typer.Option(None, "--dest", help="Folder for the downloads (default: params data.raw_dir)."),
    url_base: str | None = typer.Option(
        None, "--url-base", help="Mirror or local server: replaces everything before the file name in each URL."
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
) -> None:
    """Download Places365 with HTTP Range resume, retries and md5 verification (URLs from params.yaml)."""
    from inpnet.config import load_params
    from inpnet.data.fetch import fetch_places365

    data = load_params(params).data
    paths = fetch_places365(what.value, dest or Path(data.raw_dir), data.fetch, url_base=url_base, progress=progress)
    for path in paths:
        typer.echo(str(path))


@data_app.command("sample")
def sample(
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the three sample tars (default: params data.raw_dir)."
    ),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
) -> None:
    """Write the embedded offline sample: the three Places365 files, same names and layout, same bytes every run."""
    from inpnet.config import load_params
    from inpnet.data.sample import write_sample

    data = load_params(params).data
    for path in write_sample(out or Path(data.raw_dir), data.sample).values():
        typer.echo(str(path))
