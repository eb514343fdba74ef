"""The trainer: schedule, precision, a tiny run whose loss falls, exact resume, adversarial step."""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path

import pytest
import torch
from helpers.train import synthetic_loader, tiny_variant

from inpnet.registry.tracking import TrackingTarget
from inpnet.train.optim import EMA, lr_at, resolve_precision

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_warms_up_then_decays_to_the_floor() -> None:
    lrs = [lr_at(s, peak=1.0, warmup_steps=4, total_steps=20, min_ratio=0.1) for s in range(21)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert lrs[3:] == sorted(lrs[3:], reverse=True)  # non-increasing after the warm-up
    assert lrs[20] == pytest.approx(0.1)
    assert lr_at(100, peak=1.0, warmup_steps=0, total_steps=20) == pytest.approx(0.1)


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu).dtype is None
    assert resolve_precision("bf16", cpu).dtype is torch.bfloat16
    fp16_on_cpu = resolve_precision("fp16", cpu)
    assert fp16_on_cpu.dtype is torch.bfloat16 and not fp16_on_cpu.needs_scaler
    auto = resolve_precision("auto", cpu)
    assert auto.name in ("bf16", "fp32")
    assert resolve_precision("fp16", torch.device("cuda")).needs_scaler


def test_ema_moves_toward_the_live_weights() -> None:
    live = torch.nn.Linear(2, 2)
    ema = EMA(live, decay=0.5)
    with torch.no_grad():
        live.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(live)
    assert torch.allclose(ema.module.weight, before + 0.5)
    assert not ema.module.weight.requires_grad


def _run(tmp_path: Path, variant, **kw):
    from inpnet.train.trainer import train

    loader = partial(synthetic_loader, batches=kw.pop("batches", 6))
    return train(
        variant,
        shards=tmp_path / "shards",
        out_dir=kw.pop("out", tmp_path / "models"),
        device="cpu",
        loader_factory=loader,
        **kw,
    )


def _fixed_loss(model: torch.nn.Module, variant) -> float:
    from inpnet.losses import build_loss

    image = next(synthetic_loader(Path("."), image_size=32, batch_size=8, seed=99))["image"]
    mask = torch.zeros(8, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    with torch.no_grad():
        total, _ = build_loss(variant.model, variant.train.loss)(image, mask, model.eval()(image, mask))
    return float(total)


def test_tiny_run_loss_falls(tmp_path: Path) -> None:
    from inpnet.models.build import build_model
    from inpnet.train.checkpoint import load_model, read_meta

    v = tiny_variant(
        max_steps=60, lr=3e-3, warmup_steps=2, log_every=10, sample_every=1000, checkpoint_every=1000, precision="fp32"
    )
    torch.manual_seed(v.train.seed)
    before = _fixed_loss(build_model(v.model), v)  # the trainer's initial weights
    ckpt_dir = _run(tmp_path, v)
    assert read_meta(ckpt_dir)["step"] == 60
    model, resolved = load_model(ckpt_dir)
    assert resolved == v and not model.training
    after = _fixed_loss(model, v)
    assert after < 0.5 * before, (before, after)


@pytest.mark.slow
def test_run_is_tracked_in_mlflow(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from inpnet.train.checkpoint import read_meta

    v = tiny_variant(max_steps=4, log_every=2, sample_every=2, ema_decay=0.9)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.json").write_text('{"shards": []}')  # what the run records it read
    ckpt_dir = _run(
        tmp_path, v, tracking=TrackingTarget(tracking_uri=uri, experiment="test-train", system_metrics=True)
    )
    meta = read_meta(ckpt_dir)
    assert meta["finished"] and "model_ema" in meta["weights"]
    client = MlflowClient(uri)
    run = client.get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == v.name
    assert run.data.params["train.lr"] == str(v.train.lr) and run.data.params["model.family"] == v.model.family
    assert run.data.params["train.effective_lr"] == str(v.train.lr)  # lr_scaling none: the lr itself
    assert run.data.tags["effective_lr"].endswith("(train.lr, lr_scaling none)")
    assert {"git_commit", "variant"} <= set(run.data.tags)
    history = client.get_metric_history(run.info.run_id, "train/total")
    assert sorted(m.step for m in history) == [2, 4] and all(math.isfinite(m.value) for m in history)
    assert {"train/lr", "train/images_per_s"} <= set(run.data.metrics)
    assert client.list_artifacts(run.info.run_id)  # the sample grids
    # the trained model is a logged model of this run, holding the checkpoint's (EMA) weights
    from inpnet.registry.lineage import WEIGHTS_TAG
    from inpnet.registry.tracking import file_sha256
    from inpnet.train.checkpoint import load_model, weights_sha256

    (logged,) = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert logged.name == v.name and logged.tags[WEIGHTS_TAG] == weights_sha256(load_model(ckpt_dir, ema=True)[0])
    (train_input,) = run.inputs.dataset_inputs  # no val split here: only the training shards
    assert {t.key: t.value for t in train_input.tags}["mlflow.data.context"] == "training"
    assert train_input.dataset.digest == file_sha256(tmp_path / "shards" / "manifest.json")[:36]


@pytest.mark.parametrize("name", ["inpnet_tiny", pytest.param("cmgan_tiny", marks=pytest.mark.slow)])
def test_resume_continues_exactly_where_it_stopped(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash at step 5, resume from the step-4 checkpoint: the same weights as an uninterrupted
    run. For CM-GAN this covers the adversarial step, the discriminator and the generator noise."""
    from safetensors.torch import load_file

    from inpnet.train import steps
    from inpnet.train.checkpoint import load_state, read_meta

    # few batches per epoch: the resume must also restore the epoch and position in it
    v = tiny_variant(name, max_steps=8, checkpoint_every=2, warmup_steps=2, lr=1e-3, ema_decay=0.9, precision="fp32")
    full = _run(tmp_path, v, out=tmp_path / "full", batches=3)
    step_cls = steps.AdversarialStep if v.train.loss.adv_weight > 0 else steps.ReconstructionStep
    original = step_cls.__call__

    def crash_at_step_5(self, micro, step):
        if step == 5:
            raise RuntimeError("simulated crash")
        return original(self, micro, step)

    monkeypatch.setattr(step_cls, "__call__", crash_at_step_5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path, v, out=tmp_path / "cut", batches=3)
    assert read_meta(tmp_path / "cut" / v.name)["step"] == 4
    monkeypatch.setattr(step_cls, "__call__", original)
    resumed = _run(tmp_path, v, out=tmp_path / "cut", batches=3, resume=True)

    assert read_meta(resumed)["step"] == read_meta(full)["step"] == 8
    names = ["model", "model_ema"] + (["disc"] if (full / "disc.safetensors").is_file() else [])
    for weights in names:
        a, b = load_file(full / f"{weights}.safetensors"), load_file(resumed / f"{weights}.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert load_state(resumed)["ranks"][0]["epoch"] == load_state(full)["ranks"][0]["epoch"] == 2
    again = _run(tmp_path, v, out=tmp_path / "cut", batches=3, resume=True)  # finished: nothing to do
    assert read_meta(again)["step"] == 8


@pytest.mark.parametrize("name", ["inpnet_tiny", "mae_tiny", pytest.param("cmgan_tiny", marks=pytest.mark.slow)])
def test_every_family_trains_on_the_one_trainer(tmp_path: Path, name: str) -> None:
    from inpnet.train.checkpoint import load_model, read_meta

    v = tiny_variant(name, max_steps=2, log_every=1, ema_decay=0.9, precision="fp32")
    ckpt_dir = _run(tmp_path, v)
    assert read_meta(ckpt_dir)["step"] == 2
    model, resolved = load_model(ckpt_dir)
    assert resolved.model.family == v.model.family
    image = next(synthetic_loader(tmp_path, image_size=32, batch_size=2))["image"]
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, :16] = 1
    with torch.no_grad():
        out = model(image, mask)
    assert out.shape == image.shape and torch.isfinite(out).all()


def test_accumulation_and_bf16_autocast(tmp_path: Path) -> None:
    from inpnet.train.checkpoint import load_state, read_meta

    v = tiny_variant(max_steps=2, grad_accum=2, precision="bf16", checkpoint_every=1000)
    ckpt_dir = _run(tmp_path, v, batches=6)
    assert read_meta(ckpt_dir)["precision"] == "bf16"
    assert load_state(ckpt_dir)["ranks"][0]["position"] == 4  # two micro-batches per step


def test_adversarial_step_updates_both_networks(tmp_path: Path) -> None:
    from inpnet.train.distributed import init_distributed
    from inpnet.train.steps import AdversarialStep
    from inpnet.train.trainer import build_components

    v = tiny_variant(
        precision="fp32",
        loss={
            **tiny_variant().train.loss.model_dump(),
            "adv_weight": 0.1,
            "adv_loss": "nonsaturating",
            "r1_gamma": 1.0,
            "r1_every": 2,
        },
    )
    parts = build_components(v, init_distributed("cpu"))
    assert isinstance(parts.step, AdversarialStep) and parts.disc is not None
    d_before = [p.detach().clone() for p in parts.disc.parameters()]
    g_before = [p.detach().clone() for p in parts.model.parameters()]
    image = next(synthetic_loader(tmp_path, image_size=32, batch_size=4))["image"]
    mask = torch.zeros(4, 1, 32, 32)
    mask[:, :, 8:20, 8:20] = 1
    for step in range(2):  # step 0 includes the lazy R1 term, step 1 does not
        out = parts.step([(image, mask), (image, mask)], step)
        assert all(torch.isfinite(v_) for v_ in out.values())
        assert {"d_loss", "g_adv", "total"} <= set(out)
        assert ("d_r1" in out) == (step == 0)
    assert any(not torch.equal(a, p) for a, p in zip(d_before, parts.disc.parameters(), strict=True))
    assert any(not torch.equal(a, p) for a, p in zip(g_before, parts.model.parameters(), strict=True))
    assert all(p.requires_grad for p in parts.disc.parameters())


def _gan_variant(name: str, **loss):
    v = tiny_variant(name, precision="fp32", disc_lr=1e-3, betas=(0.5, 0.99), warmup_steps=2)
    merged = {**v.train.loss.model_dump(), "adv_weight": 0.1, **loss}
    return tiny_variant(name, precision="fp32", disc_lr=1e-3, betas=(0.5, 0.99), warmup_steps=2, loss=merged)


def test_gan_recipe_adam_no_decay_constant_lr_and_lazy_regularised_disc() -> None:
    """CM-GAN: Adam, no weight decay, constant lr (StyleGAN2); its D with lazy R1 gets lr * c
    and betas ** c, c = r1_every / (r1_every + 1). The ViT families keep AdamW + cosine."""
    from inpnet.train.distributed import init_distributed
    from inpnet.train.trainer import build_components

    info = init_distributed("cpu")
    gan_v = _gan_variant("cmgan_tiny", r1_gamma=10.0, r1_every=16)
    gan = build_components(gan_v, info)
    g, d = gan.step.updaters["model"], gan.step.updaters["disc"]
    assert type(g.optimizer) is torch.optim.Adam
    assert all(group["weight_decay"] == 0.0 for group in g.optimizer.param_groups)
    peak = gan_v.train.lr
    assert [g.set_lr(s, 1000) for s in (0, 1, 2, 500, 999)] == pytest.approx([peak / 2] + [peak] * 4)
    c = 16 / 17
    assert type(d.optimizer) is torch.optim.Adam and d.set_lr(999, 1000) == pytest.approx(1e-3 * c)
    assert d.optimizer.param_groups[0]["betas"] == pytest.approx((0.5**c, 0.99**c))
    assert d.optimizer.param_groups[0]["weight_decay"] == 0.0

    vit = build_components(_gan_variant("inpnet_tiny", r1_gamma=0.0), info)
    g, d = vit.step.updaters["model"], vit.step.updaters["disc"]
    assert type(g.optimizer) is torch.optim.AdamW and max(gr["weight_decay"] for gr in g.optimizer.param_groups) == 0.05
    assert g.set_lr(999, 1000) < 0.2 * g.set_lr(2, 1000)  # cosine
    assert d.optimizer.param_groups[0]["betas"] == (0.5, 0.99)  # no R1: no adjustment


def test_cmgan_refuses_weight_decay() -> None:
    from helpers.params import params_for_tests

    from inpnet.config import parse_params
    from inpnet.errors import ConfigError

    data = params_for_tests().model_dump(mode="json")
    data["variants"]["cmgan_tiny"]["train"]["weight_decay"] = 0.05
    with pytest.raises(ConfigError, match=r"variants\.cmgan_tiny\.train\.weight_decay.*Adam"):
        parse_params(data)


def test_masked_r1_is_cmgans_default_and_a_separate_disc_step() -> None:
    from inpnet.train.distributed import init_distributed
    from inpnet.train.trainer import build_components

    info = init_distributed("cpu")
    assert build_components(_gan_variant("cmgan_tiny", r1_gamma=1.0), info).step.r1_masked is True
    assert build_components(_gan_variant("cmgan_tiny", r1_gamma=1.0, r1_masked=False), info).step.r1_masked is False
    parts = build_components(_gan_variant("inpnet_tiny", r1_gamma=1.0, r1_every=2), info)
    assert parts.step.r1_masked is False
    image = next(synthetic_loader(Path("."), image_size=32, batch_size=4))["image"]
    mask = torch.zeros(4, 1, 32, 32)
    mask[:, :, 8:20, 8:20] = 1
    d_opt = parts.step.updaters["disc"].optimizer
    counts = []
    for step in range(3):  # R1 at steps 0 and 2, as its own optimiser step (StyleGAN2's Dreg phase)
        parts.step([(image, mask)], step)
        counts.append(int(d_opt.state[next(iter(parts.disc.parameters()))]["step"]))
    assert counts == [2, 3, 5]


@pytest.mark.slow
def test_cmgan_checkpoint_carries_w_avg_and_the_report_names_the_latent(tmp_path: Path) -> None:
    from inpnet.evaluate.methods import resolve_method
    from inpnet.train.checkpoint import load_model

    v = tiny_variant("cmgan_tiny", max_steps=2, precision="fp32", ema_decay=0.9)
    ckpt_dir = _run(tmp_path, v)
    model, _ = load_model(ckpt_dir)
    assert torch.count_nonzero(model.w_avg) > 0  # tracked in training, saved, loaded
    settings = resolve_method(str(ckpt_dir)).settings()
    assert settings["latent"] == "w_avg (truncation psi 0)"
