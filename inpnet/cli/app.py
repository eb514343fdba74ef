"""The typer applications that the ``inpnet`` command is assembled from.

Each command lives in its own module under ``inpnet.cli`` and registers itself on one of
these apps; heavy libraries (torch, mlflow, prefect) are imported inside the command so
that ``inpnet --help`` stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="inpnet",
    help="Image inpainting pipeline: Places365 shards, mask bank, training, evaluation, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Download Places365, write the embedded sample, shard tars.", no_args_is_help=True)
masks_app = typer.Typer(help="Mask generators and the fixed evaluation mask bank.", no_args_is_help=True)
weights_app = typer.Typer(help="Pretrained weights (FID Inception, MAE, LPIPS): fetch with checksums.", no_args_is_help=True)

app.add_typer(data_app, name="data")
app.add_typer(masks_app, name="masks")
app.add_typer(weights_app, name="weights")

PARAMS_HELP = "Path to params.yaml (parsed once, unknown keys rejected)."
