"""The one training loop for every model family.

:func:`train` builds the model, precision, EMA and the family's step object
(:func:`inpnet.train.steps.build_step`: optimisers and their schedules, a discriminator for
adversarial variants, noise) from a :class:`ResolvedVariant`, then runs optimiser steps
until ``max_steps``: masks from :class:`inpnet.masks.MaskMixture` with an explicit seeded
generator per rank, each optimiser's learning rate from its schedule, metrics and sample
grids to MLflow, checkpoints every ``checkpoint_every`` steps, at the end and on SIGTERM. Every ``val_every`` steps rank 0 scores a fixed val subset
(:class:`inpnet.train.validation.ValSet`), logs ``val/hole_psnr`` and ``val/ssim`` and keeps
the best-scoring weights as ``best.safetensors`` beside the last ones. What the params alone
do not show (:func:`run_notes`: the effective peak lr under ``train.lr_scaling``; whether the
perceptual term and object-aware masks a variant asks for are on, or what is missing) is
logged once and recorded as MLflow tags, ``train.effective_lr`` and in the checkpoint's meta.
Rank-zero decisions come from :class:`DistInfo.is_main` only.
"""

from __future__ import annotations

import copy
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inpnet.config import ResolvedVariant
from inpnet.errors import CheckpointError, OutputError, TrainingInterrupted
from inpnet.outputs import FolderLock
from inpnet.registry.tracking import TrackingTarget
from inpnet.train import checkpoint as ckpt
from inpnet.train.batches import BatchStream, LoaderFactory, MaskedBatches, sample_grid
from inpnet.train.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    any_rank,
    destroy,
    init_distributed,
)
from inpnet.train.optim import EMA, Precision, resolve_precision
from inpnet.train.steps import TrainStep, build_step, variant_peak_lr
from inpnet.train.validation import ValSet

log = logging.getLogger(__name__)

__all__ = ["Components", "build_components", "train"]


@dataclass
class Components:
    """Everything a run trains, built once; ``model`` is the raw (unwrapped) module."""

    model: nn.Module
    step: TrainStep
    precision: Precision
    ema: EMA | None = None
    forward_model: nn.Module | None = None  # DDP-wrapped and/or compiled view of ``model``
    best: nn.Module | None = None  # rank 0: a copy of the eval weights at the best validation
    best_scores: dict[str, float] | None = None  # {"step", "hole_psnr", "ssim", ...} of ``best``

    @property
    def eval_model(self) -> nn.Module:
        """What evaluation and export use: the EMA weights when there are any."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def disc(self) -> nn.Module | None:
        """The discriminator of an adversarial step (None otherwise)."""
        return self.step.modules.get("disc")


def build_components(variant: ResolvedVariant, info: DistInfo) -> Components:
    """Model, precision, EMA and the family's step object (optimisers, discriminator, noise)."""
    from inpnet.models.build import build_model

    cfg = variant.train
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    model = build_model(variant.model).to(info.device)
    precision = resolve_precision(cfg.precision, info.device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    forward_model: nn.Module = model
    if info.is_distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward_model = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if cfg.compile:
        forward_model = torch.compile(forward_model)  # type: ignore[assignment]  # an OptimizedModule; stubs say Callable
    step = build_step(variant, model, forward_model, precision, info)
    return Components(model, step, precision, ema=ema, forward_model=forward_model)


def _make_masks(variant: ResolvedVariant) -> Any:
    from inpnet.masks import MaskMixture

    cfg = variant.train.masks
    if cfg.object_aware and cfg.object_dir:  # CM-GAN's object-aware masks (same sample() call)
        from inpnet.masks.objects import ObjectMaskSampler

        return ObjectMaskSampler.from_config(cfg)

    return MaskMixture(cfg, seed=variant.train.seed)


def run_notes(variant: ResolvedVariant, world_size: int) -> dict[str, str]:
    """What this run trains with where the params alone do not say it: the effective peak
    learning rate (``train.lr_scaling``), and whether the perceptual term and object-aware
    masks that the variant asks for are on, with what is missing when they are off. Logged
    once, recorded as MLflow tags and in the checkpoint's meta."""
    from inpnet.losses import perceptual_status

    cfg = variant.train
    peak = variant_peak_lr(variant, world_size)
    if cfg.lr_scaling == "linear":
        batch = cfg.batch_size * world_size * cfg.grad_accum
        lr = f"{peak:.6g} = train.lr {cfg.lr:g} x global batch {batch} / 256 (lr_scaling linear)"
    else:
        lr = f"{peak:.6g} (train.lr, lr_scaling none)"
    notes = {"effective_lr": lr}
    _, perceptual = perceptual_status(cfg.loss)
    if perceptual is not None:
        notes["perceptual_loss"] = perceptual
    if cfg.masks.object_aware:
        notes["object_masks"] = (
            f"on: {cfg.masks.object_dir}"
            if cfg.masks.object_dir
            else "off: train.masks.object_dir is not set (a folder of <key>.png panoptic maps, "
            "inpnet/masks/objects.py); training masks come from the pattern mixture"
        )
    return notes


# ----------------------------------------------------------------------- checkpoints


def _has_checkpoint(ckpt_dir: Path) -> bool:
    try:
        ckpt.resolve_checkpoint_dir(ckpt_dir)
    except CheckpointError:
        return False
    return True


def _rank_state(batches: MaskedBatches, info: DistInfo) -> dict[str, Any]:
    state: dict[str, Any] = {"torch_rng": torch.get_rng_state(), **batches.state()}
    if info.device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(info.device)
    return state


def _save(
    ckpt_dir: Path,
    variant: ResolvedVariant,
    parts: Components,
    *,
    step: int,
    max_steps: int,
    rank_states: list[dict[str, Any]],
    run_id: str | None,
    info: DistInfo,
) -> None:
    modules: dict[str, nn.Module] = {"model": parts.model}
    if parts.ema is not None:
        modules["model_ema"] = parts.ema.module
    modules.update(parts.step.modules)  # e.g. the discriminator
    if parts.best is not None:
        modules["best"] = parts.best
    state = {
        "step": step,
        "world_size": info.world_size,
        "optimizers": {k: u.optimizer.state_dict() for k, u in parts.step.updaters.items()},
        "scalers": {k: u.scaler.state_dict() for k, u in parts.step.updaters.items() if u.scaler is not None},
        "ranks": rank_states,
    }
    meta = {
        "step": step,
        "max_steps": max_steps,
        "finished": step >= max_steps,
        "variant": variant.name,
        "world_size": info.world_size,
        "precision": parts.precision.name,
        "mlflow_run_id": run_id,
        "best": parts.best_scores,
        "notes": run_notes(variant, info.world_size),  # effective lr; perceptual / object masks on or off
    }
    ckpt.save_checkpoint(ckpt_dir, variant=variant, modules=modules, state=state, meta=meta)


def _restore(
    ckpt_dir: Path, variant: ResolvedVariant, parts: Components, info: DistInfo
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load weights and optimiser state; returns (state, meta) for the loop to continue from."""
    saved = ckpt.read_variant(ckpt_dir)
    if saved.model != variant.model:
        raise CheckpointError(
            f"{ckpt_dir}: the checkpoint was trained with a different model config; "
            "train without --resume (or with a new --out) to start over"
        )
    if saved.train.model_dump(exclude={"max_steps"}) != variant.train.model_dump(exclude={"max_steps"}):
        log.warning("train settings differ from the checkpoint's; resuming with the new ones")
    ckpt.load_weights_into(parts.model, ckpt_dir, "model", device=info.device)
    if parts.ema is not None:
        has_ema = (ckpt.resolve_checkpoint_dir(ckpt_dir) / "model_ema.safetensors").is_file()
        ckpt.load_weights_into(parts.ema.module, ckpt_dir, "model_ema" if has_ema else "model", device=info.device)
    for name, module in parts.step.modules.items():
        ckpt.load_weights_into(module, ckpt_dir, name, device=info.device)
    meta = ckpt.read_meta(ckpt_dir)
    if "best" in meta.get("weights", []) and meta.get("best"):
        parts.best = copy.deepcopy(parts.eval_model).eval()
        ckpt.load_weights_into(parts.best, ckpt_dir, "best", device=info.device)
        parts.best_scores = meta["best"]
    state = ckpt.load_state(ckpt_dir, map_location=info.device)
    for name, upd in parts.step.updaters.items():
        upd.optimizer.load_state_dict(state["optimizers"][name])
        if upd.scaler is not None and name in state["scalers"]:
            upd.scaler.load_state_dict(state["scalers"][name])
    return state, meta


@contextmanager
def _sigterm_flag() -> Iterator[threading.Event]:
    """An event set by SIGTERM (handler installed only on the main thread, restored after)."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------- the loop


def _datasets(shards: str | Path) -> dict[str, tuple[str | Path, str]]:
    """The run's inputs: the training split's manifest and its sibling ``val`` split's (a
    folder or a URL prefix; the tracker skips one that does not exist)."""
    import posixpath

    from inpnet.registry.tracking import shards_manifest

    manifest = shards_manifest(shards)
    if manifest is None:  # pipe: shards have no manifest
        return {}
    folder, name = posixpath.split(str(manifest))
    val = posixpath.join(posixpath.dirname(folder), "val", name)
    return {"training": (str(manifest), f"{posixpath.basename(folder)}-shards"), "validation": (val, "val-shards")}


def train(
    variant: ResolvedVariant,
    *,
    shards: str | Path,
    out_dir: Path,
    max_steps: int | None = None,
    resume: bool = False,
    tracking: TrackingTarget | None = None,
    device: str | None = None,
    loader_factory: LoaderFactory | None = None,
    val: ValSet | None = None,
) -> Path:
    """Train ``variant`` on ``shards`` and return its checkpoint dir.

    Args:
        shards: a split folder, or shards on object storage as a URL spec ``str``
            (``s3://bucket/shards/train``; the forms of :func:`inpnet.data.loader.make_loader`).
        out_dir: checkpoints go to ``<out_dir>/<variant.name>/``, locked by rank 0 for the run
            (:class:`inpnet.outputs.FolderLock`): a second run of the variant fails at once.
        max_steps: overrides ``variant.train.max_steps`` (also the cosine schedule's length).
        resume: continue from the checkpoint in the output folder, exactly where it stopped.
        tracking: MLflow settings; None turns tracking off.
        device: "cpu" or "cuda"; None picks CUDA when available.
        loader_factory: a ``make_loader``-compatible callable (tests and benchmarks).
        val: the fixed val pairs scored every ``train.val_every`` steps (None: no validation).

    Raises:
        TrainingInterrupted: SIGTERM arrived; a checkpoint was saved first.
    """
    from tqdm import tqdm

    from inpnet.masks.mixture import training_mask_rng
    from inpnet.registry.tracking import git_commit, manifest_sha256, shards_manifest, start_tracking
    from inpnet.train.cost import planned_steps

    cfg = variant.train
    ckpt_dir = Path(out_dir) / variant.name
    info = init_distributed(device)
    tracker = None
    status = "FAILED"
    lock = FolderLock(ckpt_dir)
    try:
        # train.max_steps, or the steps a budget in images or FLOPs buys at this world size
        total, how = (
            (max_steps, "--max-steps") if max_steps else planned_steps(variant, info.world_size, device=info.device)
        )
        log.info("%s: %d optimiser steps (%s)", variant.name, total, how)
        _lock_on_rank_zero(lock, info)
        parts = build_components(variant, info)
        start, run_id, state = 0, None, None
        if resume and _has_checkpoint(ckpt_dir):
            state, meta = _restore(ckpt_dir, variant, parts, info)
            start, run_id = int(state["step"]), meta.get("mlflow_run_id")
            log.info("resuming %s from step %d (%s)", variant.name, start, ckpt_dir)
        elif resume:
            log.info("--resume: no checkpoint in %s yet; starting from step 0", ckpt_dir)
        if start >= total:
            log.info("%s already trained to step %d (max_steps %d); nothing to do", variant.name, start, total)
            status = "FINISHED"
            return ckpt_dir
        mine = state["ranks"][info.rank] if state and info.rank < len(state["ranks"]) else None
        if state and (mine is None or state["world_size"] != info.world_size):
            log.warning(
                "checkpoint was written by %s ranks, now %d: data order and masks are re-seeded",
                state["world_size"],
                info.world_size,
            )
            mine = None
        rng = training_mask_rng(cfg.seed, info.rank)  # never the evaluation bank's stream
        stream = BatchStream(
            shards,
            image_size=cfg.image_size,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            rank=info.rank,
            world_size=info.world_size,
            seed=cfg.seed,
            resampled=info.is_distributed,
            epoch=mine["epoch"] if mine else 0,
            position=mine["position"] if mine else 0,
            factory=loader_factory,
        )
        batches = MaskedBatches(stream, _make_masks(variant), rng, cfg.grad_accum)
        if mine:  # after the stream's skip, which may have drawn from the global RNG
            batches.restore(mine)
            torch.set_rng_state(mine["torch_rng"].cpu())
            if "cuda_rng" in mine and info.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda_rng"].cpu(), info.device)
        track = info.is_main and tracking is not None
        notes = run_notes(variant, info.world_size)
        if info.is_main:
            for key, note in notes.items():
                (log.warning if note.startswith("off:") else log.info)("%s %s: %s", variant.name, key, note)
        params = variant.model_dump(mode="json")
        params["train"]["effective_lr"] = variant_peak_lr(variant, info.world_size)
        tags = {
            "variant": variant.name,
            "family": variant.model.family,
            "world_size": str(info.world_size),
            "git_commit": git_commit() if track else None,
            "shard_manifest_sha256": manifest_sha256(manifest)
            if track and (manifest := shards_manifest(shards))
            else None,
            **notes,
            "max_steps": f"{total} ({how})",  # a budget in images or FLOPs says how it became steps
        }
        tracker = start_tracking(
            tracking_uri=tracking.tracking_uri if tracking else "",
            experiment=tracking.experiment if tracking else "",
            run_name=variant.name,
            params=params,
            tags=tags,
            resume_run_id=run_id,
            system_metrics=bool(tracking and tracking.system_metrics),
            enabled=track,
        )
        tracker.log_datasets(_datasets(shards))
        try:
            with _sigterm_flag() as sigterm:
                status = _loop(
                    variant,
                    parts,
                    batches,
                    tracker,
                    info,
                    ckpt_dir=ckpt_dir,
                    start=start,
                    total=total,
                    sigterm=sigterm,
                    progress=tqdm,
                    val=val,
                )
        finally:
            batches.close()
        if status == "KILLED":
            raise TrainingInterrupted(
                f"training of {variant.name} stopped by SIGTERM; checkpoint saved in {ckpt_dir}; "
                f"continue with `inpnet train --variant {variant.name} --resume`"
            )
        tracker.log_model(ckpt_dir)  # the trained model, a logged model of this run
        return ckpt_dir
    finally:
        if tracker is not None:
            tracker.end(status)
        lock.release()
        destroy(info)


def _lock_on_rank_zero(lock: FolderLock, info: DistInfo) -> None:
    """Rank 0 locks the checkpoint folder (it alone writes there); every rank stops if it cannot."""
    error: OutputError | None = None
    if info.is_main:
        try:
            lock.acquire()
        except OutputError as err:
            error = err
    if any_rank(error is not None, info):
        raise error or CheckpointError(f"{lock.folder}: rank 0 could not lock the checkpoint folder (see its error)")


def _validate(
    parts: Components, val: ValSet, tracker: Any, info: DistInfo, step: int, batch_size: int
) -> dict[str, float]:
    """Score the eval weights on ``val``, log them, and keep a copy when they are the best so far."""
    scores = val.score(parts.eval_model, parts.precision, batch_size=batch_size, device=info.device)
    tracker.log_metrics({f"val/{k}": v for k, v in scores.items()}, step)
    if parts.best_scores is None or scores["hole_psnr"] > parts.best_scores["hole_psnr"]:
        parts.best = copy.deepcopy(parts.eval_model).eval()
        parts.best_scores = {"step": step, **scores}
    log.info(
        "step %d: val hole PSNR %.2f dB, SSIM %.4f (flat fill %.2f dB; best %.2f dB at step %d)",
        step,
        scores["hole_psnr"],
        scores["ssim"],
        scores["flat_hole_psnr"],
        parts.best_scores["hole_psnr"],
        parts.best_scores["step"],
    )
    return scores


def _loop(
    variant: ResolvedVariant,
    parts: Components,
    batches: MaskedBatches,
    tracker: Any,
    info: DistInfo,
    *,
    ckpt_dir: Path,
    start: int,
    total: int,
    sigterm: threading.Event,
    progress: Any,
    val: ValSet | None = None,
) -> str:
    """Optimiser steps ``start``..``total``; returns the MLflow status (FINISHED or KILLED)."""
    cfg = variant.train
    dev = info.device
    run_id = tracker.run_id
    bar = progress(total=total, initial=start, disable=not info.is_main, desc=variant.name, dynamic_ncols=True)
    log.info(
        "training %s from step %d to %d on %s (%d rank(s), precision %s)",
        variant.name,
        start,
        total,
        dev,
        info.world_size,
        parts.precision.name,
    )
    images, t0 = 0, time.perf_counter()
    step = start
    postfix: dict[str, str] = {}
    parts.model.train()
    for module in parts.step.modules.values():
        module.train()
    try:
        while step < total:
            lrs = {name: upd.set_lr(step, total) for name, upd in parts.step.updaters.items()}
            micro = [
                (image.to(dev, non_blocking=True), mask.to(dev, non_blocking=True))
                for image, mask in batches.take(step, prefetch=step + 1 < total)
            ]
            images += sum(image.shape[0] for image, _ in micro)
            losses = parts.step(micro, step)
            if parts.ema is not None:
                parts.ema.update(parts.model)
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                keys = sorted(losses)
                mean = all_reduce_mean(torch.stack([losses[k] for k in keys]), info).tolist()
                elapsed = max(time.perf_counter() - t0, 1e-9)
                ips = images * info.world_size / elapsed
                metrics = {f"train/{k}": v for k, v in zip(keys, mean, strict=True)}
                metrics.update({"train/images_per_s": ips, "train/epoch": batches.stream.epoch})
                metrics.update({_lr_key(name): v for name, v in lrs.items() if v is not None})
                tracker.log_metrics(metrics, step)
                postfix.update(loss=f"{metrics.get('train/total', float('nan')):.4f}", img_s=f"{ips:.1f}")
                bar.set_postfix(postfix)
                images, t0 = 0, time.perf_counter()
            if info.is_main and (step % cfg.sample_every == 0 or step == total):
                _log_samples(parts, micro[0], tracker, step)
            if val is not None and cfg.val_every and info.is_main and (step % cfg.val_every == 0 or step == total):
                scores = _validate(parts, val, tracker, info, step, cfg.batch_size)
                postfix["val_psnr"] = f"{scores['hole_psnr']:.2f}"
                bar.set_postfix(postfix)
            stop = any_rank(sigterm.is_set(), info)
            if step % cfg.checkpoint_every == 0 or step == total or stop:
                ranks = all_gather_objects(_rank_state(batches, info), info)
                if info.is_main:
                    _save(
                        ckpt_dir,
                        variant,
                        parts,
                        step=step,
                        max_steps=total,
                        rank_states=ranks,
                        run_id=run_id,
                        info=info,
                    )
                if info.is_distributed:
                    torch.distributed.barrier()
            if stop:
                log.warning("SIGTERM: stopped %s at step %d after saving %s", variant.name, step, ckpt_dir)
                return "KILLED"
    finally:
        bar.close()
    return "FINISHED"


def _lr_key(updater: str) -> str:
    return "train/lr" if updater == "model" else f"train/lr_{updater}"


@torch.no_grad()
def _log_samples(parts: Components, batch: tuple[torch.Tensor, torch.Tensor], tracker: Any, step: int) -> None:
    """Sample grid of the step's first micro-batch, from the EMA model when there is one."""
    model = parts.eval_model
    image, mask = batch
    was_training = model.training
    model.eval()
    with parts.precision.autocast():
        pred = model(image, mask)
    model.train(was_training)
    tracker.log_image(sample_grid(image, mask, pred), key="samples", step=step)
