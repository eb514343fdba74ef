"""Helpers for the trainer tests: tiny variants, a synthetic loader, real shards, params files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inpnet.config import ResolvedVariant

REPO_ROOT = Path(__file__).resolve().parents[2]


def tiny_variant(name: str = "inpnet_tiny", **train: Any) -> ResolvedVariant:
    """A tiny variant from the repository's params.yaml with ``train`` overrides."""
    from helpers.params import tiny_variant as resolved

    v = resolved(name)
    merged = {**v.train.model_dump(), **train}
    return ResolvedVariant(name=v.name, model=v.model, train=type(v.train).model_validate(merged))


def synthetic_loader(
    shards: Path,
    *,
    image_size: int,
    batch_size: int,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    batches: int = 6,
    **_: Any,
) -> Iterator[dict[str, Any]]:
    """``make_loader`` stand-in: smooth colour ramps, a function of (seed, epoch, rank) only."""
    rng = np.random.default_rng([seed, epoch, rank])
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    for i in range(batches):
        a = rng.uniform(0, 1, size=(batch_size, 3, 3))
        img = a[:, :, 0, None, None] * xx + a[:, :, 1, None, None] * yy + 0.5 * a[:, :, 2, None, None]
        img = torch.from_numpy(img / img.max(axis=(2, 3), keepdims=True)).float()  # (B,3,S,S)
        keys = [f"e{epoch}r{rank}b{i}n{j}" for j in range(batch_size)]
        yield {"image": img, "label": torch.zeros(batch_size, dtype=torch.long), "key": keys}


def write_shards(root: Path, n: int = 16) -> Path:
    """Real training shards (via the shard stage) of ``n`` small JPEGs; returns the split folder."""
    from helpers.places_tar import build_train_tar
    from inpnet.config import ShardConfig
    from inpnet.data.shard import shard_tar

    places = build_train_tar(root / "raw", n_good=n, bad=False, sizes=(48, 40))
    out = root / "shards" / "train"
    shard_tar(places.tar, places.filelist, "train", out, ShardConfig(samples_per_shard=4, shard_multiple=4))
    return out


def write_params(path: Path, variant: str = "inpnet_tiny", **train: Any) -> Path:
    """The repository's params.yaml and the tiny variants, with ``train`` overrides for ``variant``."""
    import yaml

    from helpers.params import repo_params_with_tiny_variants

    data = repo_params_with_tiny_variants()
    data["variants"][variant]["train"] = {**data["variants"][variant].get("train", {}), **train}
    path.write_text(yaml.safe_dump(data))
    return path


TRAIN_ENTRY = Path(__file__).resolve().parent / "train_entry.py"


def torchrun_standalone(args: list[str], *, env: dict[str, str], cwd: Path, nproc: int = 2) -> Any:
    """``python -m torch.distributed.run --standalone --nproc_per_node NPROC`` of the
    ``inpnet`` CLI with ``args``; the finished process (stdout and stderr captured)."""
    import subprocess
    import sys

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(TRAIN_ENTRY),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=240,
        check=False,
    )


def train_args(params: Path, shards: str | Path, out: Path, *extra: str) -> list[str]:
    """``inpnet train`` of ``inpnet_tiny`` on the CPU with these params, shards and output root."""
    return ["train", "--variant", "inpnet_tiny", "--params", str(params), "--shards", str(shards), "--out", str(out),
            "--device", "cpu", *extra]  # fmt: skip
