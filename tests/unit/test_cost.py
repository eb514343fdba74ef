"""A variant's parameters and training FLOPs per image, and budgets in images or FLOPs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.params import params_for_tests, tiny_variant

from inpnet.config import TrainConfig, parse_params
from inpnet.errors import ConfigError
from inpnet.train.cost import IMAGES, global_batch, planned_steps, training_cost


def _forward_flops(model: torch.nn.Module, size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    mask = torch.zeros(IMAGES, 1, size, size)
    mask[..., : size // 2, : size // 2] = 1
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(IMAGES, 3, size, size), mask)
    return int(counter.get_total_flops())


@pytest.mark.usefixtures("one_thread")
def test_training_flops_are_forward_and_backward_of_the_step() -> None:
    from inpnet.models.build import build_model

    v = tiny_variant("inpnet_tiny")
    cost = training_cost(v)
    torch.manual_seed(0)
    model = build_model(v.model)
    assert cost.params == sum(p.numel() for p in model.parameters()) and cost.disc_params == 0
    forward = _forward_flops(model, v.model.img_size) / IMAGES
    # backward costs about twice the forward (gradients of inputs and of weights); FlopCounterMode's formula
    # for the decoder's transposed convolutions counts their backward at 3.6x their forward
    assert 2.5 * forward < cost.flops_per_image < 4.5 * forward, (cost.flops_per_image, forward)
    assert cost.image_size == 32 and training_cost(v) is cost  # cached


@pytest.mark.usefixtures("one_thread")
def test_an_adversarial_variant_counts_its_discriminator_and_amortised_r1() -> None:
    from inpnet.models.build import build_model

    v = tiny_variant("cmgan_tiny")
    cost = training_cost(v)
    assert cost.disc_params > 0
    torch.manual_seed(0)
    generator_only = 3 * _forward_flops(build_model(v.model).eval(), 32) / IMAGES
    assert cost.flops_per_image > 1.5 * generator_only  # D on real and fake, G's forward for D, R1
    no_r1 = training_cost(
        v.model_copy(
            update={"train": v.train.model_copy(update={"loss": v.train.loss.model_copy(update={"r1_gamma": 0.0})})}
        )
    )
    assert cost.flops_per_image > no_r1.flops_per_image  # the lazy R1 step, every r1_every steps


def test_budgets_replace_max_steps_and_exclude_it() -> None:
    assert TrainConfig(budget_images=100).max_steps is None  # a budget replaces the default step count
    with pytest.raises(ValueError, match="set exactly one of max_steps, budget_images, budget_flops"):
        TrainConfig(max_steps=10, budget_images=100)
    with pytest.raises(ValueError, match="got none"):
        TrainConfig(max_steps=None)
    data = {
        "train": {"max_steps": 200, "batch_size": 16},
        "variants": {
            "a": {"family": "inpnet", "train": {"budget_images": 3200}},
            "b": {"family": "inpnet", "train": {"budget_flops": 1.0e15}},
            "c": {"family": "inpnet"},
        },
    }
    params = parse_params(data)
    a, b, c = params.variant("a"), params.variant("b"), params.variant("c")
    assert (a.train.max_steps, a.train.budget_images) == (None, 3200)  # the inherited 200 gives way
    assert b.train.max_steps is None and c.train.max_steps == 200
    both = {**data, "variants": {"x": {"family": "inpnet", "train": {"budget_images": 10, "max_steps": 5}}}}
    with pytest.raises(ConfigError, match=r"variants\.x\.train.*set exactly one of max_steps"):
        parse_params(both)


def test_planned_steps_from_a_budget() -> None:
    v = tiny_variant("inpnet_tiny")  # batch_size 4
    assert planned_steps(v, 1) == (4, "train.max_steps 4")
    by_images = v.model_copy(
        update={"train": v.train.model_copy(update={"max_steps": None, "budget_images": 18, "grad_accum": 2})}
    )
    assert global_batch(by_images, 2) == 16
    steps, how = planned_steps(by_images, 2)
    assert steps == 2 and "train.budget_images 18 / global batch 16 = 2 steps" in how  # ceil(18 / 16)
    per_image = training_cost(v).flops_per_image
    by_flops = v.model_copy(
        update={"train": v.train.model_copy(update={"max_steps": None, "budget_flops": 10.5 * 4 * per_image})}
    )
    steps, how = planned_steps(by_flops, 1)
    assert steps == 11 and "FLOPs per image x global batch 4" in how


def test_the_trainer_runs_the_steps_a_budget_buys(tmp_path: Path) -> None:
    from functools import partial

    from helpers.train import synthetic_loader

    from inpnet.train.checkpoint import read_meta
    from inpnet.train.trainer import train

    base = tiny_variant("inpnet_tiny")
    v = base.model_copy(
        update={"train": base.train.model_copy(update={"max_steps": None, "budget_images": 12, "val_every": 0})}
    )
    ckpt = train(
        v,
        shards=tmp_path,
        out_dir=tmp_path / "models",
        device="cpu",
        loader_factory=partial(synthetic_loader, batches=6),
    )
    meta = read_meta(ckpt)
    assert meta["step"] == 3 and meta["max_steps"] == 3 and meta["finished"]  # 12 images / batch 4
    assert params_for_tests().variant("inpnet_tiny").train.max_steps == 4  # the fixture's own count is untouched


def test_an_evaluated_checkpoint_reports_its_size_compute_seed_and_training_masks(tmp_path: Path) -> None:
    from inpnet.evaluate.methods import resolve_method
    from inpnet.models.build import build_model
    from inpnet.train.checkpoint import save_checkpoint

    v = tiny_variant("mae_tiny")
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "mae_tiny",
        variant=v,
        modules={"model": build_model(v.model)},
        state={"step": 4},
        meta={"step": 4, "world_size": 2},
    )
    settings = resolve_method(str(ckpt)).settings()
    assert settings["cost"] == training_cost(v).as_dict() and settings["cost"]["params"] > 0
    assert settings["training"] == {"steps": 4, "world_size": 2, "global_batch": 8, "images": 32}
    assert settings["train_seed"] == v.train.seed and settings["train_masks"]["generator"] == "inpnet.masks.MaskMixture"
    assert settings["input_view"] == "patches" and settings["view_patch_size"] == 8
