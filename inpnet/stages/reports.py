"""Where the pipeline's reports live: shared by the evaluate, compare and register stages."""

from __future__ import annotations

from pathlib import Path

from inpnet.config import Params

__all__ = ["report_dir"]


def report_dir(params: Params, name: str, *, baseline: bool = False) -> Path:
    """``<evaluate.out_dir>/variants/<name>``, or ``baselines/<name>`` for a classical baseline."""
    return Path(params.evaluate.out_dir) / ("baselines" if baseline else "variants") / name
