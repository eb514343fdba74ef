"""The typer applications that the ``inpnet`` command is assembled from.

Each command lives in its own module under ``inpnet.cli`` and registers itself on one of
these apps; heavy libraries (torch, mlflow, prefect) are imported inside the command so
that ``inpnet --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

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
weights_app = typer.Typer(
    help="Pretrained weights (FID Inception, MAE, LPIPS): fetch with checksums.", no_args_is_help=True
)

app.add_typer(data_app, name="data")
app.add_typer(masks_app, name="masks")
app.add_typer(weights_app, name="weights")

PARAMS_HELP = "Path to params.yaml (parsed once, unknown keys rejected)."


class _CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time, so a handler installed once keeps
    working when stderr is swapped (pytest's capture, a redirected entry point)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_logging() -> None:
    """Entry points only: INFO (or ``$INPNET_LOG_LEVEL``) to stderr, installed once."""
    root = logging.getLogger()
    if any(isinstance(h, _CurrentStderrHandler) for h in root.handlers):
        return
    handler = _CurrentStderrHandler()
    # Prefect's loggers print through Prefect's own console handler; do not print them twice.
    handler.addFilter(lambda record: not record.name.startswith("prefect"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(os.environ.get("INPNET_LOG_LEVEL", "INFO"))
    for chatty in ("httpx", "httpcore", "urllib3", "alembic"):  # one line per HTTP request / migration
        logging.getLogger(chatty).setLevel(logging.WARNING)
