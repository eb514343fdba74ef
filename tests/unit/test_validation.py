"""Validation during training: fixed val pairs, val metrics per step, best weights kept."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers.train import synthetic_loader, tiny_variant, write_shards

from inpnet.registry.tracking import TrackingTarget

pytestmark = pytest.mark.usefixtures("one_thread")


def _ramps_val(n: int = 8):
    from inpnet.train.validation import ValSet

    image = next(synthetic_loader(Path("."), image_size=32, batch_size=n, seed=123))["image"]
    mask = torch.zeros(n, 1, 32, 32)
    mask[:, :, 6:22, 10:26] = 1
    return ValSet(image, mask, flat_hole_psnr=0.0)


def test_val_set_from_real_shards_and_bank_spreads_over_cells(tmp_path: Path) -> None:
    from inpnet.errors import DataError
    from inpnet.masks import write_bank
    from inpnet.train.validation import ValSet, open_val_set

    shards = write_shards(tmp_path, n=12)
    write_bank(tmp_path / "masks", size=32, patterns=["center", "edges"], ratios=[0.3, 0.5], per_cell=2, seed=0)
    val = ValSet.from_dirs(shards, tmp_path / "masks", image_size=32, count=8)
    assert val.images.shape == (8, 3, 32, 32) and val.masks.shape == (8, 1, 32, 32)
    ratios = val.masks.mean(dim=(1, 2, 3))
    assert len({round(float(r), 1) for r in ratios}) >= 2  # several cells, not one mask for all
    assert 5.0 < val.flat_hole_psnr < 40.0
    again = ValSet.from_dirs(shards, tmp_path / "masks", image_size=32, count=8)
    assert torch.equal(val.images, again.images) and torch.equal(val.masks, again.masks)  # fixed pairs
    assert open_val_set(shards, tmp_path / "masks", image_size=32, count=8, every=0) is None
    assert open_val_set(tmp_path / "none", tmp_path / "masks", image_size=32, count=8, every=5, required=False) is None
    with pytest.raises(DataError, match="no val shards"):
        open_val_set(tmp_path / "none", tmp_path / "masks", image_size=32, count=8, every=5)


def test_training_logs_val_metrics_and_keeps_the_best_weights(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from inpnet.train.checkpoint import load_model, read_meta
    from inpnet.train.trainer import train

    v = tiny_variant(
        max_steps=12, val_every=4, log_every=4, checkpoint_every=4, lr=3e-3, warmup_steps=1, precision="fp32"
    )
    uri = os.environ["MLFLOW_TRACKING_URI"]
    val = _ramps_val()
    ckpt = train(
        v,
        shards=tmp_path,
        out_dir=tmp_path / "models",
        device="cpu",
        val=val,
        loader_factory=partial(synthetic_loader, batches=6),
        tracking=TrackingTarget(tracking_uri=uri, experiment="test-val", system_metrics=False),
    )
    meta = read_meta(ckpt)
    history = MlflowClient(uri).get_metric_history(meta["mlflow_run_id"], "val/hole_psnr")
    assert sorted(m.step for m in history) == [4, 8, 12]
    best = max(history, key=lambda m: m.value)
    assert meta["best"]["step"] == best.step and meta["best"]["hole_psnr"] == pytest.approx(best.value)
    assert "best" in meta["weights"] and "ssim" in meta["best"]
    model, _ = load_model(ckpt, which="best")
    assert val.score(model, _fp32(), batch_size=4, device=torch.device("cpu"))["hole_psnr"] == pytest.approx(
        best.value, abs=1e-4
    )
    if best.step != 12:  # the best weights are an earlier step's, not the last ones
        last, _ = load_model(ckpt)
        assert any(
            not torch.equal(a, b) for a, b in zip(model.state_dict().values(), last.state_dict().values(), strict=True)
        )


def test_resume_keeps_the_best_so_far(tmp_path: Path) -> None:
    from inpnet.train.checkpoint import read_meta
    from inpnet.train.trainer import train

    kw = dict(val_every=2, checkpoint_every=2, lr=3e-3, warmup_steps=1, precision="fp32")
    run = partial(
        train,
        shards=tmp_path,
        out_dir=tmp_path / "m",
        device="cpu",
        val=_ramps_val(),
        loader_factory=partial(synthetic_loader, batches=6),
    )
    run(tiny_variant(max_steps=4, **kw))
    first = read_meta(tmp_path / "m" / "inpnet_tiny")["best"]
    run(tiny_variant(max_steps=8, **kw), resume=True)
    after = read_meta(tmp_path / "m" / "inpnet_tiny")["best"]
    assert after["hole_psnr"] >= first["hole_psnr"]  # the earlier best competes after a resume


def _fp32():
    from inpnet.train.optim import resolve_precision

    return resolve_precision("fp32", torch.device("cpu"))
