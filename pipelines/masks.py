"""DVC stage ``masks``: the fixed, seeded evaluation mask bank in ``masks.out_dir``."""

from __future__ import annotations

import argparse

from prefect import flow, task

from inpnet.config import MasksConfig, load_params
from inpnet.stages.masks import build_mask_bank
from pipelines.common import base_parser, run_entry


@task(name="write-mask-bank")
def write_bank_task(masks: MasksConfig) -> str:
    return str(build_mask_bank(masks))


@flow(name="masks", log_prints=True)
def masks_flow(masks: MasksConfig) -> str:
    return write_bank_task(masks)


def main(args: argparse.Namespace) -> None:
    masks_flow(load_params(args.params).masks)


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))
