"""``inpnet export``: a model as one ONNX or TorchScript graph, (image, mask) -> composited output."""

from __future__ import annotations

from pathlib import Path

import typer

from inpnet.cli.app import PARAMS_HELP, app
from inpnet.cli.registry import TRACKING_HELP, _tracking_uri


@app.command("export")
def export_cmd(
    model: str = typer.Option(..., "--model", help="A checkpoint folder, a pulled model folder or models:/NAME@ALIAS."),
    fmt: str = typer.Option(..., "--format", help="onnx or torchscript."),
    out: Path = typer.Option(..., "--out", help="Folder for model.onnx / model.pt and export.json."),
    size: tuple[int, int] | None = typer.Option(
        None, "--size", help="H W of the graph (multiples of the patch size; CM-GAN: its img_size). Default img_size."
    ),
    dynamic: bool = typer.Option(False, "--dynamic", help="A dynamic batch axis (default: batch 1)."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
) -> None:
    """Export a model for onnxruntime or TorchScript; checked against PyTorch to 1e-4 before it is written."""
    from inpnet.export import export_model

    uri = _tracking_uri(tracking_uri, params) if model.startswith("models:/") else None
    path = export_model(model, out, fmt=fmt, size=size, dynamic=dynamic, tracking_uri=uri)
    typer.echo(f"exported {model} to {path} (described in {path.parent / 'export.json'})")
