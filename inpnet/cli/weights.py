"""`inpnet weights fetch` and `inpnet weights list`: pretrained weights with checksums."""

from __future__ import annotations

from pathlib import Path

import typer

from inpnet.cli.app import weights_app


@weights_app.command("list")
def list_weights() -> None:
    """Show the known weights: name, file name, checksum and where they are used."""
    from inpnet.weights import WEIGHTS

    for spec in WEIGHTS.values():
        typer.echo(f"{spec.name:22} {spec.filename:40} {spec.checksum:22} {spec.use}")


@weights_app.command("fetch")
def fetch(
    name: str = typer.Option(..., "--name", help="Weights to fetch (see `inpnet weights list`), e.g. fid_inception."),
    dest: Path = typer.Option(
        ..., "--dest", help="Folder for the file; use $TORCH_HOME/hub/checkpoints for LPIPS backbones."
    ),
    url: str = typer.Option(
        None, "--url", help="Download from this URL (mirror or local server) instead of the official one."
    ),
    sha256: str = typer.Option(None, "--sha256", help="Full sha256 (64 hex digits) that replaces the known checksum."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar on stderr."),
) -> None:
    """Download pretrained weights with resume, retries and checksum verification; prints the path."""
    from inpnet.weights import fetch_weights

    typer.echo(str(fetch_weights(name, dest, url=url, sha256=sha256, progress=progress)))
