"""Stage ``masks``: the fixed, seeded evaluation mask bank."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from inpnet.config import MasksConfig

__all__ = ["build_mask_bank"]


def build_mask_bank(
    masks: MasksConfig,
    *,
    out: Path | None = None,
    size: int | None = None,
    patterns: Sequence[str] | None = None,
    ratios: Sequence[float] | None = None,
    per_cell: int | None = None,
    seed: int | None = None,
    external_dir: Path | None = None,
    external_invert: bool = False,
) -> Path:
    """Write the bank ``masks`` describes (each argument overrides its key) and return its manifest."""
    from inpnet.masks.bank import write_bank

    external = external_dir or (Path(masks.external_dir) if masks.external_dir else None)
    return write_bank(
        out or Path(masks.out_dir),
        size=size or masks.size,
        patterns=list(patterns) if patterns else list(masks.patterns),
        ratios=list(ratios) if ratios else list(masks.ratios),
        per_cell=per_cell or masks.per_cell,
        seed=masks.seed if seed is None else seed,
        external_dir=external,
        external_invert=external_invert or masks.external_invert,
        presets={"random": {"patch_size": masks.random_patch_size}},
    )
