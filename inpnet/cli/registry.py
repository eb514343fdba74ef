"""`inpnet register`, `promote`, `pull` and `inpaint`: the registry and inference commands.

The tracking URI is ``--tracking-uri`` if given, else ``MLFLOW_TRACKING_URI`` if set, else
``registry.tracking_uri`` from params.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from inpnet.cli.app import PARAMS_HELP, app

if TYPE_CHECKING:
    from inpnet.config import Params

log = logging.getLogger(__name__)

TRACKING_HELP = "MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, else registry.tracking_uri in params)."


def _registry_cfg(params: Path) -> Params:
    from inpnet.config import load_params

    return load_params(params)


def _tracking_uri(explicit: str | None, params: Path) -> str:
    from inpnet.config import resolve_tracking_uri

    if explicit or os.environ.get("MLFLOW_TRACKING_URI"):  # params.yaml need not exist then
        return explicit or os.environ["MLFLOW_TRACKING_URI"]
    return resolve_tracking_uri(_registry_cfg(params).registry)


@app.command("register")
def register_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder written by `inpnet train` (models/<variant>)."),
    metrics: Path | None = typer.Option(
        None,
        "--metrics",
        help="The evaluator's metrics.json for this checkpoint (needed to promote); its report.json must name these "
        "weights.",
    ),
    name: str | None = typer.Option(
        None, "--name", help="Registered model name (default: registry.model_names[family])."
    ),
    bank: Path | None = typer.Option(
        None,
        "--bank",
        help="Mask bank manifest.json it must have been evaluated on (checked against report.json beside --metrics; "
        "default: the bank the report names).",
    ),
    shards: Path | None = typer.Option(
        None, "--shards", help="Shard manifest.json it was trained on (default: from the training run)."
    ),
    tag: list[str] = typer.Option([], "--tag", help="Extra version tag KEY=VALUE (repeatable)."),
    onnx: bool | None = typer.Option(
        None,
        "--onnx/--no-onnx",
        help="Also export it to ONNX and log onnx/model.onnx with the version (default: registry.export_onnx).",
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
) -> None:
    """Log a checkpoint as an MLflow pyfunc model, register it and alias it `challenger`."""
    from inpnet.errors import ConfigError
    from inpnet.registry.register import register

    extra = {}
    for item in tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--tag {item!r}: expected KEY=VALUE")
        extra[key] = value
    cfg = _registry_cfg(params).registry
    uri = _tracking_uri(tracking_uri, params)
    result = register(
        checkpoint,
        metrics,
        tracking_uri=uri,
        name=name,
        model_names=cfg.model_names,
        experiment=cfg.experiment,
        tags=extra,
        shard_manifest=shards,
        bank_manifest=bank,
        export_onnx=cfg.export_onnx if onnx is None else onnx,
    )
    typer.echo(f"registered {result.model_uri} (alias challenger, run {result.run_id})")


@app.command("promote")
def promote_cmd(
    name: str = typer.Option(..., "--name", help="Registered model name, e.g. inpnet."),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="Evaluation folder of the reference method (registry.gates.reference) for the absolute gate (default: "
        "<evaluate.out_dir>/baselines/<reference>).",
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
) -> None:
    """Make `challenger` the `champion` if it passes the gates in registry.gates."""
    from inpnet.registry.promote import load_reference, promote

    p = _registry_cfg(params)
    gates = p.registry.gates
    ref = None
    if gates.reference is not None:
        ref = load_reference(reference or Path(p.evaluate.out_dir) / "baselines" / gates.reference, gates.reference)
    d = promote(name, tracking_uri=_tracking_uri(tracking_uri, params), gates=gates, reference=ref)
    verdict = "promoted to champion" if d.promoted else f"not promoted (champion stays {d.champion_before})"
    typer.echo(f"{name} version {d.challenger}: {verdict}")
    for reason in d.reasons:
        typer.echo(f"  - {reason}")


@app.command("pull")
def pull_cmd(
    uri: str = typer.Argument(..., help="models:/NAME@ALIAS or models:/NAME/VERSION."),
    out: Path = typer.Option(..., "--out", help="New (or empty) folder for the self-contained model."),
    onnx: bool = typer.Option(
        False, "--onnx", help="Only the version's ONNX export (model.onnx, export.json), for onnxruntime."
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
) -> None:
    """Download a registered model into a folder that loads without the registry."""
    from inpnet.registry.pull import pull

    typer.echo(f"pulled {uri} into {pull(uri, out, tracking_uri=_tracking_uri(tracking_uri, params), onnx=onnx)}")


@app.command("inpaint")
def inpaint_cmd(
    model: str = typer.Option(
        ...,
        "--model",
        help="A pulled model folder, a checkpoint folder, models:/NAME@ALIAS, or a model.onnx / model.pt (or its "
        "folder) of inpnet export or inpnet pull --onnx.",
    ),
    image: Path = typer.Option(..., "--image", help="Input image, or a folder of images (folder mode)."),
    mask: Path | None = typer.Option(
        None,
        "--mask",
        help="Mask PNG (255 = hole) or a folder of masks paired by stem; omit for whole-image restoration (InP-Net "
        "only).",
    ),
    out: Path = typer.Option(..., "--out", help="Output .png, or a folder in folder mode."),
    invert_mask: bool = typer.Option(False, "--invert-mask", help="Masks use 0 = hole instead of 255 = hole."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    onnx: bool = typer.Option(
        False,
        "--onnx",
        help="Run the ONNX export that the version (models:/...) or pulled folder carries, with onnxruntime.",
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
) -> None:
    """Inpaint an image (or a folder) of any size; known pixels are kept exactly."""
    import torch

    from inpnet.errors import ConfigError
    from inpnet.export import load_model_or_export
    from inpnet.inpaint import inpaint_files, inpaint_folder

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here; use --device cpu")
    uri = _tracking_uri(tracking_uri, params) if model.startswith("models:/") else None
    inpainter, info = load_model_or_export(model, device=device, tracking_uri=uri, onnx=onnx)
    if image.is_dir():
        written = inpaint_folder(inpainter, image, mask, out, invert_mask=invert_mask, device=device)
        typer.echo(f"inpainted {len(written)} images with {info['variant']} into {out}")
    else:
        inpaint_files(inpainter, image, mask, out, invert_mask=invert_mask, device=device)
        typer.echo(f"inpainted {image} with {info['variant']} into {out}")
