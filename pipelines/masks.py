"""DVC stage ``masks``: the fixed, seeded evaluation mask bank in ``masks.out_dir``."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.common import base_parser, run_entry
from prefect import flow, task

from inpnet.config import MasksConfig, load_params


@task(name="write-mask-bank")
def write_bank_task(masks: MasksConfig) -> str:
    from inpnet.masks import write_bank

    manifest = write_bank(
        Path(masks.out_dir),
        size=masks.size,
        patterns=list(masks.patterns),
        ratios=list(masks.ratios),
        per_cell=masks.per_cell,
        seed=masks.seed,
        external_dir=Path(masks.external_dir) if masks.external_dir else None,
        external_invert=masks.external_invert,
        presets={"random": {"patch_size": masks.random_patch_size}},
    )
    return str(manifest)


@flow(name="masks", log_prints=True)
def masks_flow(masks: MasksConfig) -> str:
    return write_bank_task(masks)


def main(args: argparse.Namespace) -> None:
    masks_flow(load_params(args.params).masks)


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))
