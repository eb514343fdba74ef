"""`inpnet evaluate` (score one method) and `inpnet compare` (one report across methods)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from inpnet.cli.app import PARAMS_HELP, app

if TYPE_CHECKING:
    from inpnet.config import EvalConfig

log = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")


def _eval_config(params: Path) -> EvalConfig:
    """The ``evaluate`` section; built-in defaults when the default params.yaml is absent."""
    from inpnet.config import EvalConfig, load_params

    if params == DEFAULT_PARAMS and not params.is_file():
        log.info("no params.yaml here: using the built-in evaluate defaults")
        return EvalConfig()
    return load_params(params).evaluate


@app.command("evaluate")
def evaluate_command(
    method: str = typer.Option(
        ..., "--method", help="telea | navier_stokes | biharmonic | a checkpoint folder | models:/NAME@ALIAS."
    ),
    images: Path = typer.Option(..., "--images", help="A val shard folder (with manifest.json) or a folder of images."),
    masks: Path = typer.Option(
        ..., "--masks", help="The mask bank (with manifest.json) or a folder of external mask PNGs (255 = hole)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Report folder: metrics.json, report.json, per_image.csv, table.md, plots/, grid.png."
    ),
    save_outputs: bool = typer.Option(
        False, "--save-outputs", help="Also write each composite as outputs/<pattern>/<ratio>/<name>.png."
    ),
    params: Path = typer.Option(DEFAULT_PARAMS, "--params", help=PARAMS_HELP),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate only the first N readable images."),
    device: str = typer.Option("cpu", "--device", help="Torch device for models and metrics (cpu, cuda, cuda:1)."),
    reference: list[Path] = typer.Option(
        [],
        "--reference",
        help="Report folder of another method (repeatable; a folder of reports counts as each), "
        "shown as reference rows and dashed lines, e.g. reports/baselines.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Override evaluate.workers (CPU processes for baselines)."
    ),
) -> None:
    """Score one method: PSNR/SSIM (and FID with Inception weights) per pattern and hole ratio."""
    from inpnet.evaluate.report import load_reports
    from inpnet.stages.evaluate import evaluate_method

    cfg = _eval_config(params)
    if workers is not None:
        cfg = cfg.model_copy(update={"workers": workers})
    ref_dirs = [f for e in load_reports(reference) for f in e.folders if f.resolve() != out.resolve()]
    result = evaluate_method(
        cfg, method, images, masks, out, references=ref_dirs, device=device, save_outputs=save_outputs, limit=limit
    )
    o = result.metrics["overall"]
    fid = "n/a" if o["fid"] is None else f"{o['fid']:.2f}"
    typer.echo(
        f"{result.report['method']}: PSNR {o['psnr']:.2f} dB  SSIM {o['ssim']:.4f}  FID {fid}  "
        f"({o['n']} pairs, {o['excluded']} left out, {len(result.report['skipped'])} files skipped) -> {out}"
    )


@app.command("compare")
def compare_command(
    report_dirs: list[Path] | None = typer.Argument(
        None, help="Report folders (or folders of report folders); one variant's seed runs are grouped."
    ),
    reports: list[Path] = typer.Option(
        [], "--reports", help="Report folder, repeatable; same as the positional folders."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for table.md, psnr_by_ratio.png, ssim_by_ratio.png, compare.json."
    ),
    params: Path = typer.Option(
        DEFAULT_PARAMS,
        "--params",
        help=PARAMS_HELP + " Its registry.gates (reference, max_gap_to_reference_db) decide the warnings.",
    ),
) -> None:
    """One table and plots across methods; baselines appear as reference rows; warnings head it.

    Several evaluations of one variant trained with different train.seed (e.g. reports/seed0/inpnet_s
    reports/seed1/inpnet_s) are one method: its mean, the spread over the seeds and each seed's paired
    differences are reported.
    """
    from inpnet.config import load_params
    from inpnet.errors import DataError
    from inpnet.stages.compare import compare

    gates = load_params(params).registry.gates
    paths = [*(report_dirs or []), *reports]
    if not paths:
        raise DataError("compare: no report folders given; pass them as arguments or with --reports DIR")
    summary = compare(paths, out, gates)
    typer.echo(f"compared {len(summary['methods'])} methods (best PSNR: {summary['best']['psnr']}) -> {out}")
    for warning in summary["warnings"]:
        typer.echo(warning, err=True)
