"""`inpnet masks bank` and `inpnet masks show`: write and inspect the fixed evaluation mask bank."""

from __future__ import annotations

from pathlib import Path

import typer

from inpnet.cli.app import PARAMS_HELP, masks_app


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@masks_app.command("bank")
def bank_command(
    out: Path | None = typer.Option(None, "--out", help="Bank folder (default: masks.out_dir)."),
    size: int | None = typer.Option(None, "--size", min=8, help="Mask side in pixels (default: masks.size)."),
    patterns: str | None = typer.Option(None, "--patterns", help="Comma-separated patterns (default: masks.patterns)."),
    ratios: str | None = typer.Option(
        None, "--ratios", help="Comma-separated hole ratios in [0, 0.9] (default: masks.ratios)."
    ),
    per_cell: int | None = typer.Option(
        None, "--per-cell", min=1, help="Masks per pattern x ratio cell (default: masks.per_cell)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Bank seed (default: masks.seed)."),
    external: Path | None = typer.Option(
        None, "--external", help="Folder of mask PNGs bucketed by hole ratio as pattern 'external'."
    ),
    external_invert: bool = typer.Option(False, "--external-invert", help="The external masks use white = known."),
    params: Path = typer.Option(Path("params.yaml"), "--params", help=PARAMS_HELP),
) -> None:
    """Write DIR/<pattern>/<ratio>/NNNN.png (255 = hole) and manifest.json; same arguments, same bytes."""
    from inpnet.config import MasksConfig, load_params
    from inpnet.errors import ConfigError
    from inpnet.stages.masks import build_mask_bank

    cfg = load_params(params).masks if params.is_file() else MasksConfig()
    try:
        ratio_list = [float(r) for r in _split(ratios)] if ratios else None
    except ValueError:
        raise ConfigError(f"--ratios {ratios!r}: expected comma-separated numbers such as 0.1,0.3,0.5") from None
    manifest = build_mask_bank(
        cfg,
        out=out,
        size=size,
        patterns=_split(patterns) if patterns else None,
        ratios=ratio_list,
        per_cell=per_cell,
        seed=seed,
        external_dir=external,
        external_invert=external_invert,
    )
    typer.echo(f"mask bank written: {manifest}")
    _print_summary(manifest.parent)


@masks_app.command("show")
def show_command(
    bank: Path = typer.Argument(..., help="Bank folder holding manifest.json."),
) -> None:
    """Print each pattern x ratio cell with its mask count and mean achieved hole ratio."""
    _print_summary(bank)


def _print_summary(bank: Path) -> None:
    from inpnet.masks.bank import load_bank

    cells: dict[tuple[str, float], list[float]] = {}
    for m in load_bank(bank):
        cells.setdefault((m.pattern, m.ratio), []).append(m.achieved)
    typer.echo(f"{'pattern':<10} {'ratio':>5} {'n':>4} {'achieved':>9} {'min':>6} {'max':>6}")
    for (pattern, ratio), got in cells.items():
        typer.echo(
            f"{pattern:<10} {ratio:>5.2f} {len(got):>4} {sum(got) / len(got):>9.4f} {min(got):>6.3f} {max(got):>6.3f}"
        )
